"""Summaries, CSV/JSON/table output, folder comparison (h5 and NIfTI mixed) and its CLI."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

from mona.cli.evaluate_folders import add_arguments, run_folders
from mona.data.io import Volume, write_label_volume
from mona.errors import MonaError
from mona.evaluation.metrics import score_case
from mona.evaluation.report import COLUMNS, compare_folders, format_table, summarize, write_csv, write_json


def row(case, cls, dice, hd95, pred_empty=False, truth_empty=False, unit="mm"):
    return {"case": case, "class": cls, "dice": dice, "jaccard": dice / (2 - dice), "hd95": hd95,
            "asd": hd95 / 2, "unit": unit, "pred_empty": pred_empty, "truth_empty": truth_empty}


ROWS = [
    row("a", 1, 0.8, 2.0), row("a", 2, 0.0, 30.0, pred_empty=True),
    row("b", 1, 0.6, 4.0), row("b", 2, 1.0, 0.0, pred_empty=True, truth_empty=True),
]


def test_summarize_averages_over_cases_then_classes():
    s = summarize(ROWS, class_names=["background", "RV", "LV"])
    assert s["unit"] == "mm" and s["cases"] == 2
    rv, lv = s["classes"]
    assert (rv["name"], lv["name"]) == ("RV", "LV")
    assert rv["dice"] == pytest.approx({"mean": 0.7, "std": 0.1})
    assert lv["hd95"] == pytest.approx({"mean": 15.0, "std": 15.0})
    assert s["mean"]["dice"] == pytest.approx((0.7 + 0.5) / 2)
    assert s["mean"]["asd"] == pytest.approx((1.5 + 7.5) / 2)
    # Only the empty prediction of a present structure counts; the correct "absent" does not.
    assert (lv["empty_predictions"], lv["empty_truths"], s["empty_predictions"]) == (1, 1, 1)
    assert summarize(ROWS)["classes"][0]["name"] == "class 1"


def test_summarize_rejects_nothing_and_mixed_units():
    with pytest.raises(MonaError):
        summarize([])
    with pytest.raises(MonaError, match="units"):
        summarize([ROWS[0], row("c", 1, 0.5, 3.0, unit="voxel")])


def test_csv_and_json_files(tmp_path):
    write_csv(ROWS, tmp_path / "out" / "cases.csv")
    with open(tmp_path / "out" / "cases.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert tuple(lines[0]) == COLUMNS and len(lines) == 4
    assert float(lines[1]["hd95"]) == 30.0 and lines[1]["pred_empty"] == "True"
    summary = summarize(ROWS)
    write_json(summary, tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "summary.json"]


def test_format_table():
    table = format_table(summarize(ROWS, class_names=["bg", "RV", "LV"]))
    lines = table.splitlines()
    assert lines[0].split() == ["class", "Dice", "%", "Jaccard", "%", "HD95", "mm", "ASD", "mm"]
    assert lines[1].split()[:3] == ["RV", "70.0", "(10.0)"]
    assert lines[3].split()[:2] == ["mean", "60.0"]
    assert len({len(line) for line in lines[:4]}) == 1  # fixed width
    assert "empty predictions of a present structure: 1" in table


def volume_pair(seed):
    """A truth label volume and a prediction with one class shifted."""
    truth = np.zeros((4, 10, 12), np.uint8)
    truth[1:3, 2:6, 2:6] = 1
    truth[1:4, 5:9, 7:11] = 2
    pred = truth.copy()
    pred[pred == 1] = 0
    pred[1:3, 2 + seed:6 + seed, 2:6] = 1
    return pred, truth


def nifti_reference(spacing_dhw):
    return Volume(affine=np.diag([*spacing_dhw[::-1], 1.0]))


@pytest.fixture
def folders(tmp_path):
    """case1: truth NIfTI (zooms), prediction h5; case2: truth h5 (spacing attr), prediction NIfTI."""
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred1, truth1 = volume_pair(1)
    pred2, truth2 = volume_pair(2)
    write_label_volume(truth_dir / "case1.nii.gz", truth1, nifti_reference((5.0, 1.0, 1.0)))
    write_label_volume(pred_dir / "case1.h5", pred1)
    write_label_volume(truth_dir / "case2.h5", truth2, Volume(spacing=(2.0, 0.5, 0.5)))
    write_label_volume(pred_dir / "case2.nii", pred2)
    write_label_volume(pred_dir / "extra.h5", pred2)  # a prediction without truth is ignored
    return pred_dir, truth_dir


def test_compare_folders_mixed_formats_use_truth_spacing(folders):
    rows, summary = compare_folders(*folders, num_classes=3)
    pred1, truth1 = volume_pair(1)
    pred2, truth2 = volume_pair(2)
    expected = (score_case(pred1, truth1, 3, (5.0, 1.0, 1.0), "case1")
                + score_case(pred2, truth2, 3, (2.0, 0.5, 0.5), "case2"))
    assert [r["case"] for r in rows] == ["case1", "case1", "case2", "case2"]
    for got, want in zip(rows, expected):
        assert got == pytest.approx(want)
    assert summary["unit"] == "mm" and summary["cases"] == 2
    assert rows[2]["hd95"] == pytest.approx(1.0)  # two rows of 0.5 mm


def test_compare_folders_in_voxels(folders):
    rows, summary = compare_folders(*folders, num_classes=3, spacing_from="none")
    assert summary["unit"] == "voxel" and rows[2]["hd95"] == pytest.approx(2.0)


def test_compare_folders_errors_name_the_file(folders, tmp_path):
    pred_dir, truth_dir = folders
    (pred_dir / "case2.nii").unlink()
    with pytest.raises(MonaError, match="case2.h5.*no prediction"):
        compare_folders(pred_dir, truth_dir, num_classes=3)
    write_label_volume(pred_dir / "case2.h5", np.zeros((4, 10, 11), np.uint8))
    with pytest.raises(MonaError, match=r"pred/case2.h5.*shape"):
        compare_folders(pred_dir, truth_dir, num_classes=3)
    with pytest.raises(MonaError, match=r"truth/case1.nii.gz.*0\.\.1"):
        compare_folders(pred_dir, truth_dir, num_classes=2)
    write_label_volume(pred_dir / "case2.nii.gz", np.zeros((4, 10, 12), np.uint8))
    with pytest.raises(MonaError, match="two volumes named 'case2'"):
        compare_folders(pred_dir, truth_dir, num_classes=3)
    with pytest.raises(MonaError, match="absent"):
        compare_folders(pred_dir, tmp_path / "absent", num_classes=3)
    with pytest.raises(MonaError, match="no volumes"):
        compare_folders(truth_dir, tmp_path, num_classes=3)


def test_cli_prints_table_and_writes_files(folders, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    pred_dir, truth_dir = folders
    args = parser.parse_args(["--pred", str(pred_dir), "--truth", str(truth_dir), "--num-classes", "3",
                              "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "c.csv")])
    assert run_folders(args) == 0
    assert "HD95 mm" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["cases"] == 2
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 5
    with pytest.raises(MonaError, match="--truth"):
        run_folders(parser.parse_args(["--pred", str(pred_dir), "--num-classes", "3"]))
