"""docs/own-data.md at tiny size: scans with a few masks -> prepare -> train (no --labeled) ->
evaluate -> predict, then the README's Python example on the same run."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

import mona
from mona.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--iterations", "4", "--device", "cpu", "--no-progress", "data.image_size=32", "data.batch_labeled=2",
        "data.batch_unlabeled=2", "train.val_every=4", "train.channels_last=false"]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """The commands of docs/own-data.md, in order, at tiny size."""
    root = tmp_path_factory.mktemp("own")
    assert main(["synth", str(root / "mydata"), "--patients", "6", "--size", "32", "32",
                 "--scans-with-masks", "3"]) == 0
    assert main(["prepare", "folder", "--images", str(root / "mydata" / "scans"), "--masks",
                 str(root / "mydata" / "masks"), str(root / "prepared")]) == 0
    assert main(["train", "--data", str(root / "prepared"), "--method", "mean_teacher", "--out",
                 str(root / "runs" / "mt"), *TINY]) == 0
    assert main(["evaluate", str(root / "runs" / "mt"), "--split", "val"]) == 0
    assert main(["predict", "-m", str(root / "runs" / "mt"), "-i", str(root / "mydata" / "scans"), "-o",
                 str(root / "predicted"), "--no-progress"]) == 0
    return root


def test_unlabeled_scans_train_and_every_labeled_case_is_the_budget(walkthrough):
    import json

    import torch

    meta = json.loads((walkthrough / "prepared" / "mona.json").read_text())
    assert len(meta["labeled_cases"]) == 6 and len(meta["unlabeled_cases"]) == 6  # 3 + 3 patients, 2 frames each
    state = torch.load(walkthrough / "runs" / "mt" / "last.pt", weights_only=True)
    assert state["config"]["data"]["labeled"] == "all" and state["iteration"] == 4
    assert (walkthrough / "runs" / "mt" / "train.log").read_text().count("iteration 4/4: val Dice") == 1


def test_predicted_masks_keep_each_scan_geometry(walkthrough):
    scans = sorted((walkthrough / "mydata" / "scans").glob("*.nii.gz"))
    assert len(scans) == 12
    for scan in scans:
        image, mask = nib.load(scan), nib.load(walkthrough / "predicted" / scan.name)
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}


def test_the_python_api_is_the_cli_code_path(walkthrough):
    """The README's example: the same masks as `mona predict`, from a path or from an array."""
    predictor = mona.load_predictor(walkthrough / "runs" / "mt")
    scan = walkthrough / "mydata" / "scans" / "phantom006_frame01.nii.gz"
    written = np.asarray(nib.load(walkthrough / "predicted" / scan.name).dataobj)
    from_path = predictor.segment_file(scan)
    image = nib.load(scan)
    from_array = predictor.segment(image.get_fdata(), spacing=image.header.get_zooms())
    assert from_path.shape == image.shape and np.array_equal(from_path, written)
    assert np.array_equal(from_array, written)  # the affine is diagonal: spacing alone says the same
    summary = mona.evaluate_run(walkthrough / "runs" / "mt", "val")
    assert summary["cases"] == 2 and 0.0 <= summary["mean"]["dice"] <= 1.0


def test_python_api_trains_from_a_prepared_folder(walkthrough, tmp_path):
    config = mona.load_config([], [f"data.root={walkthrough / 'prepared'}", "method=supervised",
                                   f"out={tmp_path / 'run'}", "train.iterations=2", "train.val_every=2",
                                   "data.image_size=32", "data.batch_labeled=2", "train.device=cpu",
                                   "train.progress=false"])
    result = mona.train(config)
    assert result["best"]["iteration"] == 2 and (tmp_path / "run" / "best.pt").is_file()
    assert set(mona.METHODS) >= {"supervised", "mean_teacher", "mona"}


def test_more_masks_train_on_from_the_run(walkthrough, tmp_path, capsys):
    """#47.3: masks drawn for 2 more patients, the scans prepared again, and the run trained on from
    (`--init`); the new split puts a patient whose scans trained the run (unlabeled) in val: said."""
    assert main(["synth", str(tmp_path / "more"), "--patients", "6", "--size", "32", "32", "--scans-with-masks",
                 "5"]) == 0
    assert main(["prepare", "folder", "--images", str(tmp_path / "more" / "scans"), "--masks",
                 str(tmp_path / "more" / "masks"), str(tmp_path / "prepared")]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "prepared"), "--method", "mean_teacher", "--init",
                 str(walkthrough / "runs" / "mt"), "--out", str(tmp_path / "mt5"), *TINY]) == 0
    best = walkthrough / "runs" / "mt" / "best.pt"
    dice = torch.load(best, weights_only=True)["metrics"]["best"]["dice"]
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"note: val cases trained the run this one starts from (its dataset {walkthrough / 'prepared'}): 2 as "
        "unlabeled scans (phantom005_frame01, phantom005_frame02); val Dice, and the best checkpoint chosen by it, "
        "may overstate how the model segments unseen scans",
        f"init: loaded student, teacher from {best} (mean_teacher run, iteration 4, val Dice {dice:.4f})"]
    assert yaml.safe_load((tmp_path / "mt5" / "config.yaml").read_text())["init"] == str(best)


@pytest.fixture(scope="module")
def binary_masks(tmp_path_factory):
    """Own scans with 0/255 masks for 3 of 4 patients (a mask as many tools save it), prepared and trained."""
    root = tmp_path_factory.mktemp("binary")
    assert main(["synth", str(root / "mydata"), "--patients", "4", "--size", "32", "32", "--scans-with-masks",
                 "3"]) == 0
    for mask in (root / "mydata" / "masks").glob("*.nii.gz"):
        image = nib.load(mask)
        binary = np.where(np.asarray(image.dataobj) > 0, 255, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(binary, image.affine, image.header), mask)
    assert main(["prepare", "folder", "--images", str(root / "mydata" / "scans"), "--masks",
                 str(root / "mydata" / "masks"), str(root / "prepared"), "--test-fraction", "0"]) == 0
    assert main(["train", "--data", str(root / "prepared"), "--method", "supervised", "--out", str(root / "run"),
                 *TINY]) == 0
    return root


def test_masks_come_out_in_the_users_values_and_partial_truths_are_scored(binary_masks, capsys):
    """#46.1 and #46.2: every scan gets its mask, in the 0/255 of the user's masks; the scans with a mask
    are scored against it, and the others are counted, not failed."""
    root = binary_masks
    capsys.readouterr()
    assert main(["predict", "-m", str(root / "run"), "-i", str(root / "mydata" / "scans"), "-o",
                 str(root / "predicted"), "--truth", str(root / "mydata" / "masks"), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == (f"2 of 8 cases have no truth volume in {root / 'mydata' / 'masks'}: their masks are written, "
                       "not scored")
    assert out[-1].startswith("8 cases done, 0 failed")
    masks = sorted((root / "predicted").glob("*.nii.gz"))
    assert len(masks) == 8 and all(set(np.unique(np.asarray(nib.load(m).dataobj))) <= {0, 255} for m in masks)
    summary = json.loads((root / "predicted" / "summary.json").read_text())
    assert summary["cases"] == 6 and summary["unscored"] == ["phantom004_frame01", "phantom004_frame02"]
    scan = root / "mydata" / "scans" / "phantom004_frame01.nii.gz"
    assert np.array_equal(mona.load_predictor(root / "run").segment_file(scan),
                          np.asarray(nib.load(root / "predicted" / scan.name).dataobj))  # the API: the same values


def test_evaluate_reads_masks_in_their_own_values(binary_masks, capsys):
    """#46.2: `evaluate --pred --truth` takes the user's 0/255 masks with --label-values, and says so without."""
    root = binary_masks
    pred, truth = root / "predicted-all", root / "mydata" / "masks"
    assert main(["predict", "-m", str(root / "run"), "-i", str(root / "mydata" / "scans"), "-o", str(pred),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--num-classes", "2"]) == 2
    first = sorted(truth.iterdir())[0]
    assert capsys.readouterr().err.strip() == (
        f"mona evaluate: error: {first}: label values must lie in 0..1, found 0..255; masks in other values (e.g. "
        "0/255) are read with --label-values 0 255")
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--label-values", "0", "255"]) == 0
    assert "mean (std) over 6 cases" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["unimatch", "bcp", "abd"])
def test_the_peers_train_on_a_dataset_prepared_from_the_users_scans(walkthrough, tmp_path, method):
    """`mona train --method unimatch|bcp|abd` on the walkthrough's prepared scans, then predict with the run."""
    run = tmp_path / method
    stage_one = [f"{method}.pretrain_iterations=2"] if method != "unimatch" else []
    assert main(["train", "--data", str(walkthrough / "prepared"), "--method", method, "--out", str(run), *TINY,
                 *stage_one]) == 0
    stages = [stage["name"] for stage in json.loads((run / "stages.json").read_text())]
    assert stages == ([""] if method == "unimatch" else ["pretrain", "selftrain"])
    assert main(["predict", "-m", str(run), "-i", str(walkthrough / "mydata" / "scans"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == len(list((walkthrough / "mydata" / "scans").iterdir()))
