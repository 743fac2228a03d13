"""`mona predict`: geometry of the written masks, overlap with the truth, h5 input, overlays,
the replayed preprocessing, and bad inputs reported per case (exit 1) or per run (exit 2)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import warnings

import h5py
import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from dicom_series import INTERCEPT, SLOPE, expected_affine, write_series
from mona.cli.main import main
from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine.run import train
from mona.errors import MonaError
from mona.evaluation import predict as predict_module
from mona.evaluation.postprocess import keep_largest_component
from mona.evaluation.predict import (
    Layout,
    Preprocessing,
    inference_amp,
    load_predictor,
    predict_file,
    preprocessing_from_metadata,
    run_preprocessing,
)

# Rotated in-plane, anisotropic (1.2 x 1.2 x 8 mm), shifted: nothing about it is the identity.
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 8.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors here are tiny: one thread trains and predicts faster on shared, busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A phantom dataset and a supervised run trained just enough to find the heart (~20 s)."""
    tmp = tmp_path_factory.mktemp("predict")
    root, run = tmp / "phantom", tmp / "run"
    write_phantom(root, patients=4, size=(48, 48), slices=(4, 5))
    with warnings.catch_warnings():  # the demo preset asks for bf16, which is switched off on CPUs without it
        warnings.simplefilter("ignore")
        train(load_config(["demo"], ["method=supervised", f"data.root={root}", f"out={run}", "data.image_size=32",
                                     "data.labeled=all", "optim.lr=0.05", "train.iterations=60",
                                     "train.val_every=30", "train.progress=false"]))
    return root, run


def phantom_case(root, name=None):
    name = name or (root / "test.list").read_text().split()[0]
    with h5py.File(root / "data" / f"{name}.h5") as f:
        return name, f["image"][()], f["label"][()]


def write_nifti(path, array_dhw, affine=AFFINE, dtype=np.int16):
    """A (D, H, W) array as NIfTI (x, y, z), as `mona.data.io` reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array_dhw).transpose(2, 1, 0).astype(dtype), affine), path)
    return path


@pytest.fixture(scope="module")
def nifti_prediction(trained, tmp_path_factory):
    """One CLI call on a scanner-like NIfTI (int16, raw intensities) with truth, overlay, probabilities.

    The scan carries nnU-Net's `_0000` channel suffix; its truth and outputs are named by the case.
    """
    root, run = trained
    tmp = tmp_path_factory.mktemp("nifti")
    name, image, label = phantom_case(root)
    source = write_nifti(tmp / "in" / f"{name}_0000.nii.gz", image * 900 + 100)
    write_nifti(tmp / "truth" / f"{name}.nii.gz", label, dtype=np.uint8)
    out = tmp / "out"
    code = main(["predict", "-m", str(run), "-i", str(tmp / "in"), "-o", str(out), "--truth", str(tmp / "truth"),
                 "--overlay", "--probabilities", "--no-progress"])
    return code, name, source, label, out


def test_nifti_mask_has_the_input_geometry(nifti_prediction):
    code, name, source, _, out = nifti_prediction
    assert code == 0
    img, mask = nib.load(source), nib.load(out / f"{name}.nii.gz")
    assert mask.shape == img.shape
    np.testing.assert_allclose(mask.affine, img.affine)
    np.testing.assert_allclose(mask.header.get_zooms(), img.header.get_zooms())
    assert mask.get_data_dtype() == np.uint8 and np.asanyarray(mask.dataobj).dtype == np.uint8


def test_nifti_mask_overlaps_the_truth_and_is_scored(nifti_prediction):
    _, name, _, label, out = nifti_prediction
    predicted = np.asanyarray(nib.load(out / f"{name}.nii.gz").dataobj).transpose(2, 1, 0)
    foreground = 2 * ((predicted > 0) & (label > 0)).sum() / ((predicted > 0).sum() + (label > 0).sum())
    assert foreground > 0.3
    assert set(np.unique(predicted)) <= {0, 1, 2, 3}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 1 and summary["unit"] == "mm" and summary["failed"] == []
    rows = list(csv.DictReader(open(out / "cases.csv")))
    assert [(r["case"], r["class"]) for r in rows] == [(name, "1"), (name, "2"), (name, "3")]


def test_segment_on_an_array_is_the_mask_predict_writes(trained, nifti_prediction):
    """`Predictor.segment` on the scan as nibabel reads it (x, y, z) and its affine = the CLI's mask."""
    _, run = trained
    _, name, source, _, out = nifti_prediction
    scan = nib.load(source)
    mask = load_predictor(run, device="cpu").segment(scan.get_fdata(), scan.affine)
    written = np.asanyarray(nib.load(out / f"{name}.nii.gz").dataobj)
    assert mask.shape == scan.shape and mask.any()
    np.testing.assert_array_equal(mask, written)


def postprocessed_argmax(probabilities, run, axis):
    """The mask predict should write for these probabilities: their argmax over `axis`, post-processed
    as the run chose on val (which classes keep only their largest component depends on the CPU the
    fixture trained on)."""
    return keep_largest_component(probabilities.argmax(axis), load_predictor(run, device="cpu").largest_component)


def test_probabilities_and_overlay(trained, nifti_prediction):
    _, name, source, _, out = nifti_prediction
    probs = nib.load(out / "probabilities" / f"{name}.nii.gz")
    assert probs.shape == (*nib.load(source).shape, 4) and probs.get_data_dtype() == np.float32
    np.testing.assert_allclose(probs.get_fdata().sum(-1), 1.0, atol=1e-4)
    mask = np.asanyarray(nib.load(out / f"{name}.nii.gz").dataobj)
    np.testing.assert_array_equal(postprocessed_argmax(probs.get_fdata(), trained[1], -1), mask)
    png = out / "overlays" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_h5_input_writes_h5_or_nifti(trained, tmp_path):
    root, run = trained
    name = (root / "val.list").read_text().split()[0]
    source = root / "data" / f"{name}.h5"
    assert main(["predict", "-m", str(run), "-i", str(source), "-o", str(tmp_path / "h5"), "--probabilities",
                 "--checkpoint", "last", "--tta", "--batch-size", "2", "--no-progress"]) == 0
    _, image, label = phantom_case(root, name)
    with h5py.File(tmp_path / "h5" / f"{name}.h5") as f:
        assert f["label"].dtype == np.uint8 and f["label"].shape == image.shape
        assert f["probabilities"].shape == (4, *image.shape)
        np.testing.assert_array_equal(postprocessed_argmax(f["probabilities"][()], run, 0), f["label"][()])
        foreground = f["label"][()] > 0
    assert 2 * (foreground & (label > 0)).sum() / (foreground.sum() + (label > 0).sum()) > 0.3
    assert main(["predict", "-m", str(run), "-i", str(source), "-o", str(tmp_path / "nii"), "--format", "nii",
                 "--no-progress"]) == 0
    assert nib.load(tmp_path / "nii" / f"{name}.nii.gz").shape == image.shape[::-1]


def test_postprocessed_masks(trained, tmp_path):
    """--postprocess all: each class is one connected piece, the raw mask post-processed; the
    default applies the run's choice on val (postprocessing.json), here class 1 only."""
    root, trained_run = trained
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "postprocessing.json").write_text(json.dumps({"largest_component": [1]}))
    source = root / "data" / f"{(root / 'test.list').read_text().split()[0]}.h5"
    masks = {}
    for postprocess in ("none", "all", None):
        out = tmp_path / str(postprocess)
        flag = [] if postprocess is None else ["--postprocess", postprocess]
        assert main(["predict", "-m", str(run), "-i", str(source), "-o", str(out), "--no-progress", *flag]) == 0
        with h5py.File(out / source.name) as f:
            masks[postprocess] = f["label"][()]
    np.testing.assert_array_equal(masks["all"], keep_largest_component(masks["none"], range(1, 4)))
    np.testing.assert_array_equal(masks[None], keep_largest_component(masks["none"], [1]))
    islands = any(ndimage.label(masks["none"] == cls, structure=np.ones((3, 3, 3)))[1] > 1 for cls in range(1, 4))
    assert (masks["all"] != masks["none"]).any() == islands  # changed exactly where the raw mask had islands
    for cls in range(1, 4):
        assert ndimage.label(masks["all"] == cls, structure=np.ones((3, 3, 3)))[1] <= 1


def test_bad_cases_are_reported_and_the_good_ones_written(trained, tmp_path, capsys):
    root, run = trained
    name, image, _ = phantom_case(root)
    folder = tmp_path / "in"
    write_nifti(folder / "good.nii.gz", image)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.int16), AFFINE), folder / "four_d.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), folder / "two_d.nii")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with h5py.File(folder / "labels_only.h5", "w") as f:
        f["label"] = np.zeros((2, 8, 8), np.uint8)
    code = main(["predict", "-m", str(run), "-i", str(folder), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.nii.gz"]
    for bad, why in (("four_d.nii.gz", "expected a 3D"), ("two_d.nii", "expected a 3D"),
                     ("broken.nii.gz", "cannot read"), ("labels_only.h5", "no 'image'")):
        line = next(line for line in err.splitlines() if bad in line)
        assert why in line


def test_dicom_series_are_scans_and_get_nifti_masks_in_their_geometry(trained, tmp_path, capsys):
    """#47.5: a folder holding a DICOM series beside a NIfTI of the same voxels: the same mask, written
    as OUT/<folder>.nii.gz in the series' grid and affine, scored against a truth in that geometry."""
    root, run = trained
    _, image, label = phantom_case(root)
    stored = (image * 900 + 100).transpose(2, 1, 0).astype(np.int16)  # (columns, rows, slices)
    series = write_series(tmp_path / "in" / "series01", stored)
    nib.save(nib.Nifti1Image(stored * SLOPE + INTERCEPT, expected_affine(stored.shape[2])),
             tmp_path / "in" / "same.nii.gz")
    nib.save(nib.Nifti1Image(label.transpose(2, 1, 0).astype(np.uint8), expected_affine(stored.shape[2])),
             (tmp_path / "truth").mkdir() or tmp_path / "truth" / "series01.nii.gz")
    assert main(["predict", "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--truth",
                 str(tmp_path / "truth"), "--no-progress"]) == 0
    mask, same = nib.load(tmp_path / "out" / "series01.nii.gz"), nib.load(tmp_path / "out" / "same.nii.gz")
    assert mask.shape == stored.shape and np.array_equal(np.asarray(mask.dataobj), np.asarray(same.dataobj))
    np.testing.assert_allclose(mask.affine, expected_affine(stored.shape[2]), atol=1e-5)
    predicted = np.asarray(mask.dataobj).transpose(2, 1, 0)
    assert 2 * ((predicted > 0) & (label > 0)).sum() / ((predicted > 0).sum() + (label > 0).sum()) > 0.3
    rows = list(csv.DictReader(open(tmp_path / "out" / "cases.csv")))
    assert [(row["case"], row["class"]) for row in rows] == [("series01", "1"), ("series01", "2"), ("series01", "3")]
    capsys.readouterr()
    assert main(["predict", "-m", str(run), "-i", str(series / "IM0002.dcm"), "-o", str(tmp_path / "out2"),
                 "--no-progress"]) == 1
    assert (f"mona predict: failed: {series / 'IM0002.dcm'}: a DICOM file holds one slice: give the folder that "
            "holds its series") in capsys.readouterr().err.splitlines()


def test_summary_line_counts_cases(trained, tmp_path, capsys):
    root, run = trained
    _, image, _ = phantom_case(root)
    write_nifti(tmp_path / "in" / "a.nii", image)
    (tmp_path / "in" / "b.nii").write_bytes(b"nothing")
    assert main(["predict", "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("1 cases done, 1 failed, ") and last.endswith(" s per case")


def test_truth_outside_the_classes_fails_that_case(trained, tmp_path, capsys):
    root, run = trained
    name, image, label = phantom_case(root)
    write_nifti(tmp_path / "in" / f"{name}.nii.gz", image)
    write_nifti(tmp_path / "truth" / f"{name}.nii.gz", np.where(label > 0, 7, 0), dtype=np.uint8)
    code = main(["predict", "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--truth", str(tmp_path / "truth"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "truth" / f"{name}.nii.gz") in err and "0..3, found 0..7" in err
    assert not (tmp_path / "out" / f"{name}.nii.gz").exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt", "classes"])
def test_unusable_run_is_fatal(trained, tmp_path, capsys, problem):
    root, run = trained
    _, image, _ = phantom_case(root)
    source = write_nifti(tmp_path / "scan.nii.gz", image)
    run_dir, checkpoint = tmp_path / "run", "best"
    if problem != "missing":
        run_dir.mkdir()
    if problem == "corrupt":
        (run_dir / "best.pt").write_bytes(b"not a checkpoint")
    if problem == "classes":  # a checkpoint claiming 3 classes around 4-class weights
        state = torch.load(run / "best.pt", weights_only=True)
        state["num_classes"] = 3
        checkpoint = str(run_dir / "other.pt")
        torch.save(state, checkpoint)
    code = main(["predict", "-m", str(run_dir), "-i", str(source), "-o", str(tmp_path / "out"),
                 "--checkpoint", checkpoint, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mona predict: error: ") and err.count("\n") == 1
    expected = {"missing": str(run_dir), "empty": f"{run_dir}: not a run folder", "corrupt": str(run_dir / "best.pt"),
                "classes": checkpoint}[problem]
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_checkpoints_carry_their_preprocessing(trained):
    """predict needs the run folder alone: the dataset's normalisation and layout are in the checkpoint."""
    root, run = trained
    meta = json.loads((root / "mona.json").read_text())
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["preprocessing"]["normalisation"] == meta["normalisation"]
    state["config"]["data"]["root"] = "/nonexistent/dataset"
    assert run_preprocessing(state, run / "best.pt") == preprocessing_from_metadata(meta)


def test_dataset_with_other_class_count_is_refused(trained, tmp_path):
    """A checkpoint from before checkpoints carried their preprocessing reads its dataset's mona.json."""
    root, run = trained
    state = torch.load(run / "best.pt", weights_only=True)
    meta = json.loads((root / "mona.json").read_text())
    (tmp_path / "mona.json").write_text(json.dumps({**meta, "num_classes": 8}))
    state["config"]["data"]["root"] = str(tmp_path)
    state["preprocessing"] = {}
    with pytest.raises(MonaError, match="predicts 4 classes, but its dataset .* declares 8"):
        run_preprocessing(state, run / "best.pt")


def test_preprocessing_from_metadata():
    assert preprocessing_from_metadata({"normalisation": "minmax", "slicing_axis": 0}) == Preprocessing()
    ct = preprocessing_from_metadata({"normalisation": "window [-200, 250] -> [0, 1]", "slicing_axis": 1,
                                      "orientation": "RAS (nibabel.as_closest_canonical)"})
    assert ct.canonical and ct.slicing_axis == 1
    np.testing.assert_allclose(ct.normalise(np.array([-500.0, 25.0, 1000.0])), [0.0, 0.5, 1.0])
    mri = preprocessing_from_metadata({"preprocessing": {"normalisation":
                                                         "percentiles (0.5, 99.5) of each volume -> [0, 1]"}})
    values = mri.normalise(np.arange(1000.0))
    assert values.min() == 0 and values.max() == 1 and values[500] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(MonaError, match="mona.json: unknown normalisation 'zscore'"):
        preprocessing_from_metadata({"normalisation": "zscore"}, "mona.json")


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("P", "I", "R"), ("S", "R", "A")])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_layout_matches_prepare_and_inverts(codes, axis):
    """To the network: as `mona prepare` reads (closest RAS, slicing axis first); back: the stored order."""
    ornt = nib.orientations.axcodes2ornt(codes)
    affine = nib.orientations.inv_ornt_aff(ornt, (4, 5, 6)) @ np.diag([1.5, 2.0, 3.0, 1.0])
    raw = np.random.default_rng(0).random((4, 5, 6))
    layout = Preprocessing(canonical=True, slicing_axis=axis).layout(affine)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(raw, affine)).get_fdata()
    expected = canonical.transpose(predict_module.h5_axes(axis))
    io_order = raw.transpose(2, 1, 0)
    np.testing.assert_array_equal(layout.to_model(io_order), expected)
    np.testing.assert_array_equal(layout.to_io(layout.to_model(io_order)), io_order)
    zooms = nib.as_closest_canonical(nib.Nifti1Image(raw, affine)).header.get_zooms()
    assert layout.spacing(nib.affines.voxel_sizes(affine)[::-1]) == pytest.approx(
        [zooms[i] for i in predict_module.h5_axes(axis)])
    assert Layout().to_model(io_order) is not io_order and (Layout().to_model(io_order) == io_order).all()


def test_canonical_prediction_does_not_depend_on_storage_order(trained, tmp_path):
    """With RAS reorientation, the same scan stored flipped gives the same mask, flipped back."""
    root, run = trained
    name, image, _ = phantom_case(root)
    predictor = load_predictor(run, device="cpu")
    predictor.preprocessing = dataclasses.replace(predictor.preprocessing, canonical=True)
    raw = (image * 500).transpose(2, 1, 0)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = raw.shape[0] - 1  # voxel i -> i' = n-1-i: same world points
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(raw, np.diag([1.5, 1.5, 6.0, 1.0])), a)
    nib.save(nib.Nifti1Image(raw[::-1], np.diag([1.5, 1.5, 6.0, 1.0]) @ flip), b)
    mask_a = np.asanyarray(nib.load(predict_file(predictor, a, tmp_path / "out_a").output).dataobj)
    mask_b = np.asanyarray(nib.load(predict_file(predictor, b, tmp_path / "out_b").output).dataobj)
    np.testing.assert_array_equal(mask_b, mask_a[::-1])
    assert mask_a.any()


def test_amp_only_where_bf16_is_faster(monkeypatch):
    monkeypatch.setattr(predict_module, "fast_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="slower than fp32"):
        assert inference_amp(True, torch.device("cpu")) is False
    monkeypatch.setattr(predict_module, "fast_bf16", lambda device: True)
    assert inference_amp(True, torch.device("cpu")) is True
    assert inference_amp(False, torch.device("cpu")) is False


def test_an_unfinished_run_is_refused_unless_asked_for(trained, tmp_path, capsys):
    """#46.5: a run short of its iterations (still training, or stopped) is named as unfinished; --unfinished
    uses its checkpoint so far."""
    root, run = trained
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "stages.json").write_text(json.dumps([{"name": "", "iterations": 120}]))
    name, image, _ = phantom_case(root)
    source = write_nifti(tmp_path / "in" / f"{name}.nii.gz", image * 900 + 100)
    args = ["predict", "-m", str(copy), "-i", str(source), "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"mona predict: error: {copy}: the run is unfinished (training at iteration 60 of 120): finish it (mona "
        f"train --resume {copy}), or use its checkpoint so far with --unfinished (Python: unfinished=True)")
    assert main([*args, "--unfinished"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"note: {copy} is unfinished (training at iteration 60 of 120): using its checkpoint so far")
    assert (tmp_path / "out" / f"{name}.nii.gz").is_file()


def test_a_dataset_folder_is_not_a_run(trained, tmp_path, capsys):
    """#46.5: `-m prepared/` names what the folder is."""
    root, _ = trained
    assert main(["predict", "-m", str(root), "-i", str(root), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mona predict: error: {root}: not a run folder: a prepared dataset (mona.json), no config.yaml or "
        "checkpoint; give the folder `mona train --out` wrote")
