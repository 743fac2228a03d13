"""docs/own-data.md at tiny size: scans with a few masks -> prepare -> train (no --labeled) ->
evaluate -> predict, then the README's Python example on the same run."""

import nibabel as nib
import numpy as np
import pytest

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
