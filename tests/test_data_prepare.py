"""`mona prepare`: tiny synthetic raw trees in each layout, written with nibabel, prepared and checked
(splits, classes, orientation and spacing, normalisation, bad input); plus a round trip of real
ACDC volumes through an official-style raw tree when ../shared/data/ACDC is present."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from dicom_series import INTERCEPT, SLOPE, expected_affine, write_series
from mona.cli import prepare as cli
from mona.cli.main import main
from mona.data.prepare import prepare_acdc, prepare_folder, prepare_lits, prepare_mmwhs, prepare_nnunet
from mona.data.prepare.acdc import split_lists
from mona.data.prepare.lits import split_lits
from mona.data.prepare.mmwhs import split_mmwhs
from mona.data.prepare.nnunet import split_cases
from mona.data.prepare.normalise import percentile_window, window
from mona.data.prepare.splitting import derive_volumes
from mona.errors import MonaError

SHARED_ACDC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ACDC"
SHAPE = (6, 5, 4)
# Voxel i runs posterior (0.8 mm), j right (0.7 mm), k superior (2.5 mm): reorienting to RAS
# swaps and flips axes, so the h5 (z, y, x) spacing is (2.5, 0.8, 0.7).
AFFINE = np.array([[0, 0.7, 0, 5], [-0.8, 0, 0, 3], [0, 0, 2.5, -7], [0, 0, 0, 1.0]])


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def read_h5(path: Path):
    """image, label (None when the file has none: an unlabeled case) and attrs."""
    with h5py.File(path, "r") as f:
        return f["image"][()], f["label"][()] if "label" in f else None, dict(f.attrs)


def lines(path: Path) -> list[str]:
    return path.read_text().split()


def raw_pair(rng, values, shape=SHAPE, low=-1000, high=1000):
    return rng.integers(low, high, shape).astype(np.int16), rng.choice(values, shape).astype(np.int16)


def assert_same_voxels(out: Path, case: str, raw_image, raw_label, raw_affine, image_fn, label_fn):
    """Each raw voxel, found in the h5 arrays through the world position both affines give it,
    holds the normalised raw value and the mapped label (none for an unlabeled case, `raw_label`
    None): orientation and affine agree."""
    image, label, attrs = read_h5(out / "data" / f"{case}.h5")
    meta = json.loads((out / "mona.json").read_text())["cases"][case]
    assert np.allclose(attrs["affine"], meta["affine"]) and np.allclose(attrs["spacing"], meta["spacing"])
    ijk = np.indices(raw_image.shape).reshape(3, -1)
    world = raw_affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    dhw = np.rint(np.linalg.inv(np.array(meta["affine"])) @ world)[:3].astype(int)
    assert np.allclose(image[tuple(dhw)], image_fn(raw_image.astype(np.float32))[tuple(ijk)], atol=1e-6)
    if raw_label is None:
        assert label is None
    else:
        assert np.array_equal(label[tuple(dhw)], label_fn(raw_label)[tuple(ijk)])
    return image, label, meta


def lits_tree(root: Path, numbers=(0, 1, 90, 100), seed=0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for n in numbers:
        arrays[n] = raw_pair(rng, [0, 1, 2])
        save(root / "batch" / f"volume-{n}.nii", arrays[n][0])
        save(root / "batch" / f"segmentation-{n}.nii", arrays[n][1])
    return arrays


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ---- splits on names -------------------------------------------------------------------------


def test_lits_split_follows_the_spec_numbering():
    splits = split_lits(list(range(131)), Path("raw"))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [90, 10, 31]
    assert splits["train"][:10] == list(range(10)) and splits["val"] == list(range(90, 100))
    assert splits["test"][0] == 100 and splits["test"][-1] == 130
    with pytest.raises(MonaError, match="0-130"):
        split_lits([5, 131], Path("raw"))


def test_mmwhs_split_puts_the_budget_volumes_first():
    splits = split_mmwhs(list(range(1001, 1021)), Path("raw"))
    assert splits["test"] == [1001, 1002, 1008, 1014, 1015] and splits["val"] == [1020]
    assert splits["train"][:3] == [1018, 1004, 1003] and len(splits["train"]) == 14
    with pytest.raises(MonaError, match="1001-1020"):
        split_mmwhs([1021], Path("raw"))


def test_nnunet_split_is_seeded_and_sized():
    names = [f"case_{i:03d}" for i in range(100)]
    first = split_cases(names, 0, 0.1, 0.2)
    assert first == split_cases(list(reversed(names)), 0, 0.1, 0.2)
    assert first != split_cases(names, 1, 0.1, 0.2)
    assert [len(first[s]) for s in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(sum(first.values(), [])) == names
    assert [len(v) for v in split_cases(names[:3], 0, 0.1, 0.1).values()] == [1, 1, 1]
    # few masks: test gives way first, then val keeps one and train one
    assert [len(v) for v in split_cases(names[:2], 0, 0.1, 0.1).values()] == [1, 1, 0]
    assert [len(v) for v in split_cases(names[:3], 0, 0.6, 0.3).values()] == [1, 2, 0]
    assert [len(v) for v in split_cases(names[:4], 0, 0.0, 0.0).values()] == [3, 1, 0]
    with pytest.raises(MonaError, match="at least two masks are needed, one to train and one to validate"):
        split_cases(names[:1], 0, 0.1, 0.1)
    with pytest.raises(MonaError, match="fraction must lie in"):
        split_cases(names, 0, 1.0, 0.1)


def test_split_keeps_a_patients_cases_together():
    names = [f"patient{p:03d}_frame{f:02d}" for p in range(10) for f in (1, 12)]
    split = split_cases(names, 3, 0.2, 0.2)
    assert [len(split[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    patients = {s: {n[:10] for n in split[s]} for s in split}
    assert not patients["train"] & patients["val"] and not patients["val"] & patients["test"]
    assert all(split["train"][i][:10] == split["train"][i + 1][:10] for i in range(0, 12, 2))  # grouped
    with pytest.raises(MonaError, match=r"2 labeled case\(s\) of 1 patient"):
        split_cases(names[:2], 0, 0.1, 0.1)


def test_packaged_acdc_lists_are_the_ssl4mis_split():
    lists = split_lists()
    volumes = derive_volumes(lists["train_slices"])
    patients = list(dict.fromkeys(v.split("_")[0] for v in volumes))
    assert (len(lists["train_slices"]), len(volumes), len(patients)) == (1312, 140, 70)
    assert patients[:7] == ["patient099", "patient038", "patient050", "patient100", "patient058",
                            "patient021", "patient049"]
    assert (len(lists["val"]), len(lists["test"])) == (20, 40)
    assert not set(volumes) & set(lists["val"]) and not set(lists["val"]) & set(lists["test"])
    if SHARED_ACDC.is_dir():
        assert lists == {stem: lines(SHARED_ACDC / f"{stem}.list") for stem in lists}


# ---- the four layouts ---------------------------------------------------------------------------


def test_lits_prepares_splits_window_and_geometry(tmp_path):
    arrays = lits_tree(tmp_path / "raw")
    out = prepare_lits(tmp_path / "raw", tmp_path / "out")
    assert lines(out / "train.list") == ["lits_000", "lits_001"]
    assert (lines(out / "val.list"), lines(out / "test.list")) == (["lits_090"], ["lits_100"])
    assert lines(out / "train_slices.list") == [f"lits_00{c}_slice_{i}" for c in (0, 1) for i in range(1, 5)]
    meta = json.loads((out / "mona.json").read_text())
    assert (meta["classes"], meta["num_classes"], meta["modality"]) == (["background", "liver", "tumour"], 3, "CT")
    for n, case in ((0, "lits_000"), (90, "lits_090")):
        image, label, case_meta = assert_same_voxels(out, case, *arrays[n], AFFINE,
                                                     lambda x: window(x, -200, 250), lambda y: y)
        assert image.dtype == np.float32 and label.dtype == np.uint8 and 0 <= image.min() and image.max() <= 1
        assert image.shape == (4, 6, 5) and case_meta["spacing"] == pytest.approx([2.5, 0.8, 0.7])
        assert case_meta["original_shape"] == list(SHAPE)
    volume, label, _ = read_h5(out / "data" / "lits_001.h5")
    s_image, s_label, _ = read_h5(out / "data" / "slices" / "lits_001_slice_2.h5")
    assert np.array_equal(s_image, volume[1]) and np.array_equal(s_label, label[1])
    assert not (out / "data" / "slices" / "lits_090_slice_1.h5").exists()


def test_mmwhs_maps_raw_values_and_orders_training(tmp_path):
    rng = np.random.default_rng(1)
    raw_values = [0, 500, 600, 420, 421, 550, 205, 820, 850]
    arrays = {}
    for n in (1001, 1003, 1004, 1018, 1020):
        arrays[n] = raw_pair(rng, raw_values)
        save(tmp_path / "raw" / "ct_train" / f"ct_train_{n}_image.nii.gz", arrays[n][0])
        save(tmp_path / "raw" / "ct_train" / f"ct_train_{n}_label.nii.gz", arrays[n][1])
    out = prepare_mmwhs(tmp_path / "raw", tmp_path / "out")
    assert lines(out / "train.list") == ["ct_1018", "ct_1004", "ct_1003"]
    assert (lines(out / "val.list"), lines(out / "test.list")) == (["ct_1020"], ["ct_1001"])
    meta = json.loads((out / "mona.json").read_text())
    assert meta["classes"] == ["background", "LV", "RV", "LA", "RA", "Myo", "AAo", "PA"]
    lut = {0: 0, 500: 1, 600: 2, 420: 3, 421: 3, 550: 4, 205: 5, 820: 6, 850: 7}
    _, label, _ = assert_same_voxels(out, "ct_1004", *arrays[1004], AFFINE, lambda x: window(x, -200, 800),
                                     np.vectorize(lut.get))
    assert set(np.unique(label)) == set(range(8))


def test_acdc_names_ed_es_frames_and_keeps_stored_order(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {}
    for p, es in ((1, 12), (2, 7), (3, 9)):
        folder = tmp_path / "raw" / "training" / f"patient{p:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\n")
        for tag, frame in (("frame01", 1), ("frame02", es)):
            arrays[f"patient{p:03d}_{tag}"] = raw_pair(rng, [0, 1, 2, 3], shape=(7, 6, 3), low=0, high=900)
            save(folder / f"patient{p:03d}_frame{frame:02d}.nii.gz", arrays[f"patient{p:03d}_{tag}"][0])
            save(folder / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", arrays[f"patient{p:03d}_{tag}"][1])
    lists = tmp_path / "lists"
    lists.mkdir()
    train = [f"patient003_frame0{f}_slice_{i}" for f in (1, 2) for i in (2, 3, 1)]
    (lists / "train_slices.list").write_text("\n".join(train) + "\n")
    (lists / "val.list").write_text("patient002_frame01\npatient002_frame02\n")
    (lists / "test.list").write_text("patient001_frame01\npatient001_frame02\n")
    out = prepare_acdc(tmp_path / "raw", tmp_path / "out", lists=lists)
    assert lines(out / "train_slices.list") == train
    assert lines(out / "train.list") == ["patient003_frame01", "patient003_frame02"]
    for case, (raw_image, raw_label) in arrays.items():
        image, label, _ = read_h5(out / "data" / f"{case}.h5")
        expected = raw_image.astype(np.float32).transpose(2, 1, 0)
        assert np.allclose(image, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-6)
        assert np.array_equal(label, raw_label.transpose(2, 1, 0))
    meta = json.loads((out / "mona.json").read_text())
    assert meta["cases"]["patient001_frame02"]["spacing"] == pytest.approx([2.5, 0.7, 0.8])
    assert meta["cases"]["patient001_frame02"]["source"] == "patient001_frame12.nii.gz"
    assert meta["split_source"] == f"SSL4MIS lists ({lists})" and meta["unlabeled_cases"] == []
    assert meta["splits"]["test"] == ["patient001_frame01", "patient001_frame02"]
    volume = read_h5(out / "data" / "patient003_frame02.h5")[0]
    assert np.array_equal(read_h5(out / "data" / "slices" / "patient003_frame02_slice_1.h5")[0], volume[0])


def nnunet_tree(root: Path, channel: str, labels: dict, affine=None, cases=5, test_cases=0, seed=3):
    affine = np.diag([4.0, 1.0, 1.2, 1.0]) if affine is None else affine
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": channel}, "labels": labels,
                                                   "file_ending": ".nii.gz", "name": "Toy"}))
    arrays = {}
    for folder, count in (("Tr", cases), ("Ts", test_cases)):
        for i in range(count):
            name = f"toy{folder}_{i:03d}"
            arrays[name] = raw_pair(rng, sorted(labels.values()), low=-500, high=1500)
            save(root / f"images{folder}" / f"{name}_0000.nii.gz", arrays[name][0], affine)
            save(root / f"labels{folder}" / f"{name}.nii.gz", arrays[name][1], affine)
    return arrays


def test_nnunet_mri_slices_the_coarse_axis_and_remaps_labels(tmp_path):
    affine = np.diag([4.0, 1.0, 1.2, 1.0])
    arrays = nnunet_tree(tmp_path / "ds", "T2", {"background": 0, "a": 2, "b": 5}, affine)
    out = prepare_nnunet(tmp_path / "ds", tmp_path / "out", seed=4, labeled=2)
    splits = {s: lines(out / f"{s}.list") for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [3, 1, 1]
    assert splits == split_cases(list(arrays), 4, 0.1, 0.2)
    meta = json.loads((out / "mona.json").read_text())
    assert (meta["name"], meta["classes"], meta["modality"]) == ("Toy", ["background", "a", "b"], "T2")
    assert (meta["slicing_axis"], meta["labeled"], meta["budgets"]) == (0, 2, [2])
    case = splits["val"][0]
    image, _, case_meta = assert_same_voxels(out, case, *arrays[case], affine, percentile_window,
                                             np.vectorize({0: 0, 2: 1, 5: 2}.get))
    assert image.shape == (6, 4, 5) and case_meta["spacing"] == pytest.approx([4.0, 1.2, 1.0])
    assert (image.min(), image.max()) == (0.0, 1.0)
    axial = prepare_nnunet(tmp_path / "ds", tmp_path / "axial", axis=2)
    with pytest.raises(MonaError, match="--labeled 4"):
        prepare_nnunet(tmp_path / "ds", tmp_path / "four", labeled=4)
    assert read_h5(axial / "data" / f"{case}.h5")[0].shape == (4, 5, 6)


def test_nnunet_ct_window_from_foreground_and_labelled_test_set(tmp_path):
    arrays = nnunet_tree(tmp_path / "ds", "CT", {"background": 0, "organ": 1}, cases=4, test_cases=1)
    out = prepare_nnunet(tmp_path / "ds", tmp_path / "out")
    assert lines(out / "test.list") == ["toyTs_000"]
    train = lines(out / "train.list")
    assert len(train) == 3 and len(lines(out / "val.list")) == 1
    foreground = np.concatenate([arrays[n][0][arrays[n][1] != 0] for n in train]).astype(np.float32)
    low, high = np.percentile(foreground, (0.5, 99.5))
    meta = json.loads((out / "mona.json").read_text())
    assert meta["normalisation"] == f"window [{low:g}, {high:g}] -> [0, 1]"
    fixed = prepare_nnunet(tmp_path / "ds", tmp_path / "fixed", hu_window=(-100, 300))
    assert json.loads((fixed / "mona.json").read_text())["normalisation"] == "window [-100, 300] -> [0, 1]"


# ---- bad input ------------------------------------------------------------------------------------


MASK_PROBLEMS = ("shape", "affine", "label values")


def break_mask(label: Path, problem: str, value: int) -> None:
    """Rewrite a mask with another shape, another affine, or every voxel `value`."""
    if problem == "shape":
        save(label, np.zeros((6, 5, 3), np.int16))
    elif problem == "affine":
        save(label, np.zeros(SHAPE, np.int16), AFFINE @ np.diag([1, 1, 2.0, 1]))
    else:
        save(label, np.full(SHAPE, value, np.int16))


def broken_lits(raw: Path, problem: str) -> str:
    """Break case 1 of a LiTS tree in one way; return the file name the error must mention."""
    image, label = raw / "batch" / "volume-1.nii", raw / "batch" / "segmentation-1.nii"
    if problem == "unreadable":
        image.write_bytes(b"not a nifti file at all" * 20)
    elif problem == "no label":
        label.unlink()
    elif problem in MASK_PROBLEMS:
        break_mask(label, problem, 3)
    elif problem == "4D":
        save(image, np.zeros((*SHAPE, 2), np.int16))
    return {"no label": image.name, "4D": image.name, "unreadable": image.name}.get(problem, label.name)


@pytest.mark.parametrize("problem", ["unreadable", "no label", "shape", "affine", "label values", "4D"])
def test_bad_input_is_one_error_naming_the_file_and_leaves_nothing(tmp_path, problem):
    lits_tree(tmp_path / "raw")
    name = broken_lits(tmp_path / "raw", problem)
    with pytest.raises(MonaError, match=name.replace(".", r"\.")):
        prepare_lits(tmp_path / "raw", tmp_path / "out")
    assert no_leftovers(tmp_path / "out")


@pytest.mark.parametrize("prepare", [prepare_acdc, prepare_lits, prepare_mmwhs, prepare_nnunet])
def test_empty_dataset_is_an_error(tmp_path, prepare):
    (tmp_path / "raw").mkdir()
    if prepare is prepare_nnunet:
        (tmp_path / "raw" / "dataset.json").write_text(json.dumps(
            {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}))
    with pytest.raises(MonaError, match="empty dataset"):
        prepare(tmp_path / "raw", tmp_path / "out")
    assert no_leftovers(tmp_path / "out")


def test_mmwhs_unknown_label_value_names_the_file(tmp_path):
    for n, value in ((1001, 500), (1018, 999), (1020, 500)):
        save(tmp_path / "raw" / f"ct_train_{n}_image.nii.gz", np.zeros(SHAPE, np.int16))
        save(tmp_path / "raw" / f"ct_train_{n}_label.nii.gz", np.full(SHAPE, value, np.int16))
    with pytest.raises(MonaError, match=r"ct_train_1018_label\.nii\.gz.*\[999\]"):
        prepare_mmwhs(tmp_path / "raw", tmp_path / "out")


def test_acdc_missing_patient_and_info_are_errors(tmp_path):
    folder = tmp_path / "raw" / "training" / "patient001"
    save(folder / "patient001_frame01.nii.gz", np.zeros(SHAPE, np.int16))
    lists = tmp_path / "lists"
    lists.mkdir()
    for stem in ("train_slices", "val", "test"):  # lists naming a patient that is not here
        (lists / f"{stem}.list").write_text("patient099_frame01_slice_1\n" if stem == "train_slices" else
                                            "patient099_frame01\n")
    with pytest.raises(MonaError, match="no folder for patient099"):
        prepare_acdc(tmp_path / "raw", tmp_path / "out", lists=lists)
    for stem in ("train_slices", "val", "test"):
        (lists / f"{stem}.list").write_text("patient001_frame01_slice_1\n" if stem == "train_slices" else
                                            "patient001_frame01\n")
    with pytest.raises(MonaError, match="Info.cfg is missing"):
        prepare_acdc(tmp_path / "raw", tmp_path / "out", lists=lists)


@pytest.mark.parametrize("change, message", [
    ({"labels": {"background": 0, "tumour": [1, 2]}}, "region-based"),
    ({"channel_names": {"0": "T1", "1": "T2"}}, "single-channel"),
    ({"file_ending": ".png"}, "not supported"),
])
def test_nnunet_unsupported_dataset_json(tmp_path, change, message):
    nnunet_tree(tmp_path / "ds", "CT", {"background": 0, "x": 1}, cases=3)
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({**info, **change}))
    with pytest.raises(MonaError, match=message):
        prepare_nnunet(tmp_path / "ds", tmp_path / "out")


def test_existing_output_needs_overwrite(tmp_path):
    lits_tree(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(MonaError, match="--overwrite"):
        prepare_lits(tmp_path / "raw", out)
    assert (out / "old.txt").exists()
    prepare_lits(tmp_path / "raw", out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "mona.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(MonaError, match="raw data"):
        prepare_lits(tmp_path / "raw", tmp_path, overwrite=True)


# ---- command line ------------------------------------------------------------------------------


def test_cli_runs_and_documents_each_layout(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    lits_tree(tmp_path / "raw")
    args = parser.parse_args(["lits", str(tmp_path / "raw"), str(tmp_path / "out"), "--window", "-100", "200"])
    assert cli.run(args) == 0
    assert json.loads((tmp_path / "out" / "mona.json").read_text())["normalisation"] == "window [-100, 200] -> [0, 1]"
    for name, marker in (("acdc", "Info.cfg"), ("lits", "segmentation-0"), ("mmwhs", "ct_train_1001_label"),
                         ("nnunet", "dataset.json")):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert marker in text and "├──" in text


# ---- real ACDC round trip --------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_ACDC.is_dir(), reason="../shared/data/ACDC is absent")
def test_real_acdc_round_trip_through_official_layout(tmp_path):
    """Volumes of the shared copy written back as official NIfTI (x, y, z), frames named as in
    Info.cfg, rescaled to raw-looking intensities: `prepare acdc` must give the arrays back."""
    shared = SHARED_ACDC
    train_slices = [n for n in lines(shared / "train_slices.list") if n.startswith("patient099_")]
    splits = {"train_slices": train_slices, "val": ["patient028_frame01", "patient028_frame02"],
              "test": ["patient001_frame01", "patient001_frame02"]}
    volumes = {}
    for case in derive_volumes(train_slices):
        count = sum(n.startswith(f"{case}_slice_") for n in train_slices)
        slices = [read_h5(shared / "data" / "slices" / f"{case}_slice_{i}.h5") for i in range(1, count + 1)]
        volumes[case] = (np.stack([s[0] for s in slices]), np.stack([s[1] for s in slices]))
    for case in splits["val"] + splits["test"]:
        volumes[case] = read_h5(shared / "data" / f"{case}.h5")[:2]
    affine = np.array([[-1.5625, 0, 0, 120], [0, 1.5625, 0.3, -90], [0, 0, 10, 40], [0, 0, 0, 1.0]])
    for case, (image, label) in volumes.items():
        patient, tag = case.split("_")
        frame = 1 if tag == "frame01" else 12
        folder = tmp_path / "raw" / "training" / patient
        save(folder / f"{patient}_frame{frame:02d}.nii.gz", (image * 812.0 + 3.0).transpose(2, 1, 0), affine)
        save(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", label.transpose(2, 1, 0), affine)
        (folder / "Info.cfg").write_text("ED: 1\nES: 12\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    for stem, names in splits.items():
        (lists / f"{stem}.list").write_text("".join(f"{n}\n" for n in names))
    out = prepare_acdc(tmp_path / "raw", tmp_path / "out", lists=lists)
    for case, (image, label) in volumes.items():
        got_image, got_label, attrs = read_h5(out / "data" / f"{case}.h5")
        assert got_image.shape == image.shape and np.allclose(got_image, image, atol=1e-5)
        assert np.array_equal(got_label, label)
        assert attrs["spacing"] == pytest.approx([10, 1.5625, 1.5625], abs=0.05)
    for name in train_slices:
        assert np.allclose(read_h5(out / "data" / "slices" / f"{name}.h5")[0],
                           read_h5(shared / "data" / "slices" / f"{name}.h5")[0], atol=1e-5)
    assert lines(out / "train_slices.list") == train_slices


# ---- partly labeled data: own folders, nnU-Net cases without labels, partial downloads ---------------


def own_folder(root: Path, cases: int = 5, masked=(0, 1, 2), values=(0, 3, 7), seed: int = 6) -> dict:
    """scanK_0000.nii.gz in root/images for K < cases, masks scanK.nii.gz in root/masks for K in `masked`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for k in range(cases):
        image = rng.integers(-500, 1500, SHAPE).astype(np.int16)
        label = rng.choice(values, SHAPE).astype(np.int16) if k in masked else None
        save(root / "images" / f"scan{k}_0000.nii.gz", image)
        if label is not None:
            save(root / "masks" / f"scan{k}.nii.gz", label)
        arrays[f"scan{k}"] = (image, label)
    (root / "masks").mkdir(exist_ok=True)
    return arrays


def test_folder_prepares_scans_with_masks_for_some(tmp_path):
    arrays = own_folder(tmp_path / "raw")
    more = {f"extra{k}": np.random.default_rng(k).integers(0, 900, SHAPE).astype(np.int16) for k in range(2)}
    for name, image in more.items():
        save(tmp_path / "more" / "series" / f"{name}.nii", image)
    logged = []
    out = prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "out",
                         unlabeled=tmp_path / "more", seed=1, test_fraction=0, log=logged.append)
    meta = json.loads((out / "mona.json").read_text())
    assert meta["labeled_cases"] == ["scan0", "scan1", "scan2"]
    assert meta["unlabeled_cases"] == ["extra0", "extra1", "scan3", "scan4"]
    assert meta["splits"] == {**split_cases(meta["labeled_cases"], 1, 0.1, 0), "test": []}
    assert meta["split_source"].startswith("seeded by patient (seed 1, val fraction 0.1, test fraction 0")
    assert (meta["classes"], meta["label_values"]) == (["background", "class 3", "class 7"], [0, 3, 7])
    # labeled training cases first (the budget), then the unlabeled; never in val; no test split
    assert lines(out / "train.list") == meta["splits"]["train"] + meta["unlabeled_cases"]
    training = lines(out / "train.list")
    assert lines(out / "train_slices.list") == [f"{case}_slice_{i}" for case in training for i in range(1, 5)]
    assert lines(out / "val.list") == meta["splits"]["val"] and not (out / "test.list").exists()
    with h5py.File(out / "data" / "slices" / "extra1_slice_2.h5") as f:
        assert set(f) == {"image"}
    with h5py.File(out / "data" / "slices" / f"{meta['splits']['train'][0]}_slice_2.h5") as f:
        assert set(f) == {"image", "label"}
    # unlabeled scans are oriented, sliced and normalised exactly as the labeled ones
    assert_same_voxels(out, "extra1", more["extra1"], None, AFFINE, percentile_window, None)
    assert_same_voxels(out, "scan3", arrays["scan3"][0], None, AFFINE, percentile_window, None)
    assert_same_voxels(out, "scan0", *arrays["scan0"], AFFINE, percentile_window, np.vectorize({0: 0, 3: 1, 7: 2}.get))
    assert logged[-4:] == ["labeled cases: 3 (train 2, val 1, test 0); unlabeled cases: 4 (training only)",
                          f"val: {meta['splits']['val'][0]}", "test: none", f"split: {meta['split_source']}"]


def test_folder_classes_option_names_the_mask_values(tmp_path):
    own_folder(tmp_path / "raw", cases=3, values=(0, 1, 2))
    out = prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "out",
                         classes=["background", "liver", "tumour"], modality="CT", hu_window=(-100, 200))
    meta = json.loads((out / "mona.json").read_text())
    assert (meta["classes"], meta["label_values"], meta["modality"]) == (["background", "liver", "tumour"],
                                                                        [0, 1, 2], "CT")
    assert meta["normalisation"] == "window [-100, 200] -> [0, 1]" and meta["unlabeled_cases"] == []


def test_nnunet_keeps_cases_without_labels_and_takes_more_unlabeled(tmp_path):
    ds = tmp_path / "ds"
    affine = np.diag([4.0, 1.0, 1.2, 1.0])
    arrays = nnunet_tree(ds, "CT", {"background": 0, "organ": 1}, affine, cases=5, test_cases=2)
    for name in ("toyTr_003", "toyTr_004"):
        (ds / "labelsTr" / f"{name}.nii.gz").unlink()
    for path in (ds / "labelsTs").iterdir():
        path.unlink()
    (ds / "labelsTs").rmdir()
    extreme = arrays["toyTs_000"][0] * 50  # an unlabeled scan must not move the CT window
    save(ds / "imagesTs" / "toyTs_000_0000.nii.gz", extreme, affine)
    logged = []
    out = prepare_nnunet(ds, tmp_path / "out", unlabeled=ds / "imagesTs", test_fraction=0, log=logged.append)
    meta = json.loads((out / "mona.json").read_text())
    assert meta["unlabeled_cases"] == ["toyTr_003", "toyTr_004", "toyTs_000", "toyTs_001"]
    assert meta["labeled_cases"] == ["toyTr_000", "toyTr_001", "toyTr_002"]
    assert (len(meta["splits"]["train"]), len(meta["splits"]["val"]), meta["splits"]["test"]) == (2, 1, [])
    foreground = np.concatenate([arrays[n][0][arrays[n][1] != 0] for n in meta["splits"]["train"]])
    low, high = (float(f"{v:g}") for v in np.percentile(foreground.astype(np.float32), (0.5, 99.5)))
    assert meta["normalisation"] == f"window [{low:g}, {high:g}] -> [0, 1]"
    image, _, _ = assert_same_voxels(out, "toyTs_000", extreme, None, affine, lambda x: window(x, low, high), None)
    assert image.shape == (6, 4, 5) and meta["slicing_axis"] == 0
    assert logged[-4] == "labeled cases: 3 (train 2, val 1, test 0); unlabeled cases: 4 (training only)"
    with pytest.raises(MonaError, match="toyTr_000 is also in"):
        prepare_nnunet(ds, tmp_path / "twice", unlabeled=ds / "imagesTr")


@pytest.mark.parametrize("prepare", ["folder", "nnunet"])
def test_fewer_than_two_masks_is_one_clear_error(tmp_path, prepare):
    if prepare == "folder":
        own_folder(tmp_path / "raw", cases=3, masked=(1,))
        call = (prepare_folder, tmp_path / "raw" / "images", tmp_path / "raw" / "masks")
    else:
        nnunet_tree(tmp_path / "raw", "T2", {"background": 0, "x": 1}, cases=3)
        for name in ("toyTr_000", "toyTr_001"):
            (tmp_path / "raw" / "labelsTr" / f"{name}.nii.gz").unlink()
        call = (prepare_nnunet, tmp_path / "raw")
    with pytest.raises(MonaError, match=r"1 labeled case\(s\).*at least two masks are needed, one to train and one"):
        call[0](*call[1:], tmp_path / "out")
    assert no_leftovers(tmp_path / "out")


def broken_folder(root: Path, problem: str) -> tuple[str, dict]:
    """Break a 3-mask folder in one way; the file name the error must name and prepare's options."""
    own_folder(root, cases=4, values=(0, 1, 2))
    mask, options = root / "masks" / "scan1.nii.gz", {}
    if problem in MASK_PROBLEMS:  # label values: 2, beyond the two --classes
        break_mask(mask, problem, 2)
        options = {"classes": ["background", "organ"]}
    elif problem == "fractional mask":
        save(mask, np.full(SHAPE, 0.5, np.float32))
    elif problem == "mask without scan":
        mask = save(root / "masks" / "ghost.nii.gz", np.zeros(SHAPE, np.int16))
    elif problem == "unreadable unlabeled scan":
        mask = root / "more" / "broken.nii.gz"
        mask.parent.mkdir()
        mask.write_bytes(b"\x1f\x8b not really gzip" * 10)
        options = {"unlabeled": root / "more"}
    return mask.name, options


@pytest.mark.parametrize("problem", [*MASK_PROBLEMS, "fractional mask", "mask without scan",
                                     "unreadable unlabeled scan"])
def test_bad_own_data_is_one_error_naming_the_file_and_leaves_nothing(tmp_path, problem):
    name, options = broken_folder(tmp_path / "raw", problem)
    with pytest.raises(MonaError, match=name.replace(".", r"\.")) as info:
        prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "out", **options)
    assert "\n" not in str(info.value)
    assert no_leftovers(tmp_path / "out")


def test_nnunet_mask_value_not_in_dataset_json_names_the_file(tmp_path):
    nnunet_tree(tmp_path / "ds", "T2", {"background": 0, "x": 1}, cases=3)
    save(tmp_path / "ds" / "labelsTr" / "toyTr_001.nii.gz", np.full(SHAPE, 4, np.int16), np.diag([4.0, 1.0, 1.2, 1.0]))
    with pytest.raises(MonaError, match=r"toyTr_001\.nii\.gz: label values \[4\] are not declared"):
        prepare_nnunet(tmp_path / "ds", tmp_path / "out")
    assert no_leftovers(tmp_path / "out")


def test_partial_lits_and_mmwhs_fall_back_to_a_seeded_split(tmp_path):
    lits_tree(tmp_path / "lits", numbers=(0, 1, 2, 5))  # all four in the paper's training range
    logged = []
    out = prepare_lits(tmp_path / "lits", tmp_path / "lits_out", log=logged.append)
    meta = json.loads((out / "mona.json").read_text())
    names = ["lits_000", "lits_001", "lits_002", "lits_005"]
    assert meta["splits"] == split_cases(names, 0, 0.1, 0.2)
    assert [len(meta["splits"][s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert meta["split_source"].startswith("seeded fallback: the paper's LiTS split leaves val and test empty")
    assert f"split: {meta['split_source']}" in logged
    assert lines(out / "test.list") == meta["splits"]["test"]
    for n in (1001, 1003):  # 1001 is a test volume; no training or validation volume at all
        save(tmp_path / "mmwhs" / f"ct_train_{n}_image.nii.gz", np.zeros(SHAPE, np.int16))
        save(tmp_path / "mmwhs" / f"ct_train_{n}_label.nii.gz", np.full(SHAPE, 500, np.int16))
    out = prepare_mmwhs(tmp_path / "mmwhs", tmp_path / "mmwhs_out")
    meta = json.loads((out / "mona.json").read_text())
    assert meta["split_source"].startswith("seeded fallback: the paper's MMWHS split leaves val empty")
    assert [len(meta["splits"][s]) for s in ("train", "val", "test")] == [1, 1, 0] and not (out / "test.list").exists()
    lits_tree(tmp_path / "one", numbers=(3,))
    with pytest.raises(MonaError, match="at least two masks"):
        prepare_lits(tmp_path / "one", tmp_path / "one_out")
    lits_tree(tmp_path / "lits_full")  # train, val and test all present: the paper's split
    complete = prepare_lits(tmp_path / "lits_full", tmp_path / "full_out")
    assert json.loads((complete / "mona.json").read_text())["split_source"] == "the paper's LiTS split"


def test_cli_prepares_a_folder_and_prints_the_split(tmp_path, capsys):
    own_folder(tmp_path / "raw", cases=4, values=(0, 1))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["folder", "--images", str(tmp_path / "raw" / "images"), "--masks",
                              str(tmp_path / "raw" / "masks"), str(tmp_path / "out"), "--classes", "background",
                              "lesion", "--seed", "2", "--test-fraction", "0"])
    assert cli.run(args) == 0
    captured = capsys.readouterr()
    assert "labeled cases: 3 (train 2, val 1, test 0); unlabeled cases: 1 (training only)" in captured.err
    assert f"prepared folder in {tmp_path / 'out'}" in captured.out
    assert json.loads((tmp_path / "out" / "mona.json").read_text())["classes"] == ["background", "lesion"]
    with pytest.raises(SystemExit):
        parser.parse_args(["folder", "--help"])
    assert "case_0000.nii.gz" in capsys.readouterr().out


def acdc_patients(raw: Path, numbers) -> None:
    """training/patientXXX folders of the official layout (ED frame 1, ES frame 5), 0..3 masks."""
    rng = np.random.default_rng(4)
    for p in numbers:
        folder = raw / "training" / f"patient{p:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 5\n")
        for frame in (1, 5):
            image, label = raw_pair(rng, [0, 1, 2, 3], shape=(7, 6, 3), low=0, high=900)
            save(folder / f"patient{p:03d}_frame{frame:02d}.nii.gz", image)
            save(folder / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", label)


def test_partial_acdc_falls_back_to_a_seeded_split(tmp_path, capsys):
    """#46.13: two patients' folders cannot follow the SSL4MIS split: a seeded one, said so, as LiTS and MM-WHS."""
    acdc_patients(tmp_path / "raw", (3, 7))
    assert main(["prepare", "acdc", str(tmp_path / "raw"), str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "mona.json").read_text())
    cases = ["patient003_frame01", "patient003_frame02", "patient007_frame01", "patient007_frame02"]
    assert meta["splits"] == split_cases(cases, 0, 0.1, 0.2) and meta["labeled_cases"] == cases
    expected = ("seeded fallback: the SSL4MIS split cannot be used, 98 of its 100 patients are not here (first "
                "patient001); these 2 patients are split by patient with seed 0, val fraction 0.1, test fraction 0.2")
    assert meta["split_source"] == expected
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"split: {expected}" and err[-4].startswith("labeled cases: 4 (train 2, val 2, test 0)")


def test_prepare_lists_the_files_it_skips(tmp_path, capsys):
    """#46.9: files in the scans or masks folder that are not scans are named, not silently left out."""
    own_folder(tmp_path / "raw", cases=3, values=(0, 1))
    (tmp_path / "raw" / "images" / "notes.txt").write_text("scanned 2026")
    (tmp_path / "raw" / "images" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an index, not a slice
    (tmp_path / "raw" / "masks" / "scan0.png").write_bytes(b"PNG")
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    assert main(["prepare", "folder", "--images", str(images), "--masks", str(masks), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [f"note: skipped 2 file(s) in {images} that are not scans (.nii.gz, .nii, or a folder holding "
                       "one DICOM series): DICOMDIR, notes.txt",
                       f"note: skipped 1 file(s) in {masks} that are not masks of the scans (.nii.gz, .nii): scan0.png"]


def test_a_mask_with_a_label_set_of_its_own_is_named(tmp_path, capsys):
    """#46.3: one 0/255 mask among 0..3 masks would silently make a class 255: prepare warns, naming it."""
    own_folder(tmp_path / "raw", cases=4, masked=(0, 1, 2, 3), values=(0, 1, 2, 3))
    stray = save(tmp_path / "raw" / "masks" / "scan2.nii.gz",
                 np.where(np.arange(120).reshape(SHAPE) % 2, 255, 0).astype(np.int16))
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    assert main(["prepare", "folder", "--images", str(images), "--masks", str(masks), str(tmp_path / "out")]) == 0
    assert (f"warning: {stray}: no other mask holds the value(s) [255] (the others hold [1, 2, 3]); they become "
            "class(es) class 255: check this mask, or give --classes") in capsys.readouterr().err.splitlines()
    assert json.loads((tmp_path / "out" / "mona.json").read_text())["label_values"] == [0, 1, 2, 3, 255]


def test_an_empty_masks_folder_is_named(tmp_path, capsys):
    """#46.11: the error names the masks folder, not the scans folder."""
    own_folder(tmp_path / "raw", cases=3, masked=())
    masks = tmp_path / "raw" / "masks"
    assert main(["prepare", "folder", "--images", str(tmp_path / "raw" / "images"), "--masks", str(masks),
                 str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mona prepare: error: {masks}: no masks found: each is a .nii.gz or .nii file named as its scan "
        "(case.nii.gz for case.nii.gz, case_0000.nii.gz or a DICOM series folder case/)")


def test_a_bad_mask_stops_prepare_before_it_prints_a_split(tmp_path, capsys):
    """#46.11: the split is printed once the dataset is written, so a stopped prepare shows none."""
    name, _ = broken_folder(tmp_path / "raw", "affine")  # found while the cases are read, after the split
    assert main(["prepare", "folder", "--images", str(tmp_path / "raw" / "images"), "--masks",
                 str(tmp_path / "raw" / "masks"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert name in err.splitlines()[-1] and "labeled cases" not in err and "split:" not in err


def test_a_folder_holding_a_dicom_series_is_one_scan(tmp_path, capsys):
    """#47.5: IMAGES/<case>/ (at any depth) holding one DICOM series is the scan <case>, its mask a NIfTI
    in the series' geometry; every voxel lands where DICOM's geometry puts it (through world positions)."""
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "raw" / "images", tmp_path / "raw" / "masks"
    arrays = {}
    for k in range(3):
        stored = rng.integers(0, 600, (5, 4, 3)).astype(np.int16)
        write_series(images / ("export/study" if k == 2 else "") / f"case{k}", stored)
        arrays[f"case{k}"] = (stored * SLOPE + INTERCEPT, rng.choice([0, 1, 2], (5, 4, 3)).astype(np.uint8))
        save(masks / f"case{k}.nii.gz", arrays[f"case{k}"][1], expected_affine())
    (images / "case0" / "notes.txt").write_text("not a slice")
    assert main(["prepare", "folder", "--images", str(images), "--masks", str(masks), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        f"note: skipped 1 file(s) in {images} that are not scans (.nii.gz, .nii, or a folder holding one DICOM "
        "series): case0/notes.txt")
    meta = json.loads((tmp_path / "out" / "mona.json").read_text())
    assert meta["labeled_cases"] == ["case0", "case1", "case2"] and meta["cases"]["case2"]["source"] == "case2"
    for case, (image, label) in arrays.items():
        _, _, case_meta = assert_same_voxels(tmp_path / "out", case, image, label, expected_affine(),
                                             percentile_window, lambda x: x)
        assert case_meta["original_shape"] == [5, 4, 3]
