"""The `mona` command: help of every verb, user errors in one line with exit code 2,
`mona evaluate RUN_DIR` on a tiny run, and a tiny `mona demo`."""

import csv
import json

import numpy as np
import pytest
import torch

from mona.cli.demo import LEARNING_RATES
from mona.cli.main import VERBS, main
from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.run import evaluate_run, train
from mona.engine.trainer import fast_bf16
from mona.experiments.html import predicted_labels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("cli") / "ds", patients=4, size=(32, 48), slices=(4, 5))


def exit_code(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_main_help(capsys):
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: mona" in out
    for verb in ("demo", "synth", "train", "evaluate", "prepare"):
        assert verb in out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_verb_help(verb, capsys):
    assert exit_code([verb, "--help"]) == 0
    assert f"usage: mona {verb}" in capsys.readouterr().out


def test_prepare_dataset_help(capsys):
    assert exit_code(["prepare", "acdc", "--help"]) == 0
    assert "Info.cfg" in capsys.readouterr().out


def test_no_verb_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage: mona" in capsys.readouterr().out


def test_unknown_flag_is_an_argparse_error(capsys):
    assert exit_code(["train", "--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def one_line_error(capsys, verb):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mona {verb}: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_train_with_a_missing_data_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    code = main(["train", "--data", str(missing), "--out", str(tmp_path / "run"), "--no-progress",
                 "train.device=cpu"])
    assert code == 2
    line = one_line_error(capsys, "train")
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "run").exists()


def test_train_without_data_and_with_a_bad_override(tmp_path, capsys):
    assert main(["train", "--method", "supervised"]) == 2
    assert "--data" in one_line_error(capsys, "train")
    assert main(["train", "--data", str(tmp_path), "train.iterations=many"]) == 2
    assert "train.iterations" in one_line_error(capsys, "train")
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in one_line_error(capsys, "train")


def test_evaluate_a_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert one_line_error(capsys, "evaluate") == (f"mona evaluate: error: {tmp_path}: not a run folder: no "
                                                  "config.yaml or checkpoint; give the folder `mona train --out` wrote")


@pytest.fixture(scope="module")
def tiny_run(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run") / "run"
    config = load_config([], [
        f"data.root={phantom}", f"out={out}", "method=supervised", "data.labeled=1", "data.image_size=32",
        "data.batch_labeled=2", "train.iterations=4", "train.val_every=2", "train.device=cpu",
        "train.progress=false",
    ])
    train(config)
    return out


def test_evaluate_run(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test split, best checkpoint" in out
    folder = tiny_run / "eval_test_best"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split"] == "test" and summary["checkpoint"] == "best" and summary["cases"] == 2
    assert [c["name"] for c in summary["classes"]] == ["RV", "Myo", "LV"]
    assert 0.0 <= summary["mean"]["dice"] <= 1.0
    rows = (folder / "cases.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 3  # header + 2 test volumes x 3 foreground classes
    assert "phantom004_frame01" in (folder / "cases.csv").read_text()


def test_evaluate_run_returns_the_label_maps_it_scored(tiny_run):
    """`return_labels` hands back what was scored (the demo's page shows them), the same maps a fresh
    prediction of the checkpoint gives, and the same summary."""
    summary, labels = evaluate_run(tiny_run, "test", device="cpu", return_labels=True)
    assert summary == evaluate_run(tiny_run, "test", device="cpu")
    volumes = load_volumes(dataset_info(load_config([tiny_run / "config.yaml"]).data.root), "test")
    assert [label.shape for label in labels] == [volume.label.shape for volume in volumes]
    for ours, fresh in zip(labels, predicted_labels(tiny_run, volumes)):
        np.testing.assert_array_equal(ours, fresh)


def test_evaluate_last_on_val(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--split", "val", "--checkpoint", "last", "--device", "cpu"]) == 0
    summary = json.loads((tiny_run / "eval_val_last" / "summary.json").read_text())
    assert summary["iteration"] == 4 and summary["split"] == "val"


def test_training_chooses_the_postprocessing_on_val(tiny_run):
    """Training ends by scoring best.pt on val, raw, and choosing per class from those label maps."""
    raw = json.loads((tiny_run / "eval_val_best" / "summary.json").read_text())
    choice = json.loads((tiny_run / "postprocessing.json").read_text())
    assert raw["postprocess"] == "none" and raw["largest_component"] == []
    assert choice["checkpoint_iteration"] == raw["iteration"] and set(choice["val_dice"]) == {"1", "2", "3"}
    dice = {int(c): raw_and_kept for c, raw_and_kept in choice["val_dice"].items()}
    assert choice["largest_component"] == [c for c in (1, 2, 3) if dice[c][1] > dice[c][0]]
    assert "postprocessing chosen on val" in (tiny_run / "train.log").read_text()


@pytest.mark.parametrize("postprocess, folder",
                         [("all", "eval_val_best_largest"), ("val", "eval_val_best_postprocessed")])
def test_evaluate_postprocessed_writes_its_own_folder(tiny_run, capsys, postprocess, folder):
    raw = (tiny_run / "eval_val_best" / "summary.json").read_text()
    (tiny_run / "postprocessing.json").rename(tiny_run / "chosen.json")
    (tiny_run / "postprocessing.json").write_text(json.dumps({"largest_component": [2]}))
    try:
        assert main(["evaluate", str(tiny_run), "--split", "val", "--postprocess", postprocess, "--device", "cpu"]) == 0
    finally:
        (tiny_run / "chosen.json").replace(tiny_run / "postprocessing.json")
    expected = [1, 2, 3] if postprocess == "all" else [2]
    names = ", ".join(["RV", "Myo", "LV"][c - 1] for c in expected)
    assert f"largest component only: {names}" in capsys.readouterr().out
    summary = json.loads((tiny_run / folder / "summary.json").read_text())
    assert summary["largest_component"] == expected and summary["split"] == "val"
    assert (tiny_run / "eval_val_best" / "summary.json").read_text() == raw  # the plain scores are not overwritten


@pytest.mark.parametrize("chosen_for, expected", [(4, [2]), (3, [])])
def test_the_val_choice_applies_to_its_checkpoint_only(tiny_run, capsys, chosen_for, expected):
    """postprocessing.json was chosen for one checkpoint (its iteration); `last`, at iteration 4,
    keeps it only where that is the checkpoint it was chosen for, else is not post-processed."""
    chosen = (tiny_run / "postprocessing.json").read_text()
    (tiny_run / "postprocessing.json").write_text(json.dumps({"largest_component": [2],
                                                              "checkpoint_iteration": chosen_for}))
    try:
        assert main(["evaluate", str(tiny_run), "--split", "val", "--checkpoint", "last", "--postprocess", "val",
                     "--device", "cpu"]) == 0
    finally:
        (tiny_run / "postprocessing.json").write_text(chosen)
    summary = json.loads((tiny_run / "eval_val_last_postprocessed" / "summary.json").read_text())
    assert summary["iteration"] == 4 and summary["largest_component"] == expected
    assert f"largest component only: {'Myo' if expected else 'none'}" in capsys.readouterr().out


@pytest.mark.parametrize("content, problem", [("{not json", "unreadable"),
                                              ('{"largest_component": [4]}', "outside 1..3")])
def test_a_bad_postprocessing_choice_is_named(tiny_run, capsys, content, problem):
    chosen = (tiny_run / "postprocessing.json").read_text()
    (tiny_run / "postprocessing.json").write_text(content)
    try:
        assert main(["evaluate", str(tiny_run), "--split", "val", "--postprocess", "val", "--device", "cpu"]) == 2
    finally:
        (tiny_run / "postprocessing.json").write_text(chosen)
    err = capsys.readouterr().err
    assert f"{tiny_run / 'postprocessing.json'}: " in err and problem in err and "Traceback" not in err


@pytest.mark.parametrize("verb", [["evaluate"], ["predict", "-i", "x.h5", "-o", "out", "-m"]])
def test_a_missing_run_folder_is_named(tmp_path, capsys, verb):
    missing = tmp_path / "no-such-run"
    assert main([*verb, str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: run folder not found" in err and "Traceback" not in err


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--iterations", "4", "--patients", "2", "--val-patients", "1",
                 "--test-patients", "1", "--seed", "3", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    # the demo preset asks for bf16 autocast, switched off with a note on CPUs where it is slower
    assert ("slower than fp32" in printed) is not fast_bf16(torch.device("cpu"))
    table = printed[printed.index("test volumes:"):].splitlines()
    assert "seed 3" in table[0] and table[1].split() == ["Dice", "%", "HD95", "mm"]
    assert table[2].split() == ["method", "mean", "RV", "Myo", "LV", "mean", "RV", "Myo", "LV", "seconds"]
    assert [row.split()[0] for row in table[3:6]] == ["supervised", "mean_teacher", "mona"]
    for method, row in zip(("supervised", "mean_teacher", "mona"), table[3:6]):
        summary = json.loads((out / method / "eval_test_best" / "summary.json").read_text())
        cells = [float(cell) for cell in row.split()[1:]]
        assert len(cells) == 9 and cells[0] == pytest.approx(100 * summary["mean"]["dice"], abs=0.051)
        assert cells[4] == pytest.approx(summary["mean"]["hd95"], abs=0.051)
    def volume_dice(method):  # per test volume, the mean over classes
        rows = list(csv.DictReader(open(out / method / "eval_test_best" / "cases.csv")))
        cases = {r["case"] for r in rows}
        return {case: np.mean([float(r["dice"]) for r in rows if r["case"] == case]) for case in cases}
    mona = volume_dice("mona")
    for reference, line in zip(("supervised", "mean_teacher"), table[6:8]):  # the paired comparison under the table
        theirs = volume_dice(reference)
        gains = [mona[case] - theirs[case] for case in mona]
        assert line.startswith(f"mona against {reference}: {100 * np.mean(gains):+.1f} Dice points per test volume, "
                               f"ahead on {sum(g > 0 for g in gains)} of 2")
    assert torch.load(out / "supervised" / "last.pt", weights_only=True)["iteration"] == 4
    stages = [torch.load(out / "mona" / stage / "last.pt", weights_only=True)["iteration"]
              for stage in ("pretrain", "finetune")]
    assert sum(stages) == 4 and min(stages) >= 1  # MONA trains as many iterations as the others, in two stages
    rates = {method: load_config([out / method / "config.yaml"]).optim.lr for method in LEARNING_RATES}
    assert rates == LEARNING_RATES  # each method at the learning rate chosen for it on val, recorded in its run folder
    meta = json.loads((out / "data" / "mona.json").read_text())
    assert meta["phantom"] == {"patients": 4, "seed": 3, "slices": [8, 12], "size": [96, 96], "variation": 1.0,
                               "held_out": [1, 1]}
    page = (out / "report.html").read_text()
    assert page.count('<input type="range"') == 2  # one slider per test volume (1 test patient, 2 frames)
    assert all(f"<figcaption>{m}</figcaption>" in page for m in ("image", "truth", "supervised", "mona"))
    assert "<td>mean_teacher</td>" in page and "learning curves" in page and "http" not in page


@pytest.mark.parametrize("classes, line", [([3], "LV keeps only its largest connected component"),
                                           ([1, 3], "RV, LV keep only their largest connected component")])
def test_the_postprocessing_line_agrees_with_its_classes(tmp_path, monkeypatch, classes, line):
    """#46.11: one class "keeps only its", several "keep only their" largest connected component."""
    from mona.engine import run as run_module

    def choose(run_dir, *args, **kwargs):
        choice = {"largest_component": classes, "val_dice": {"1": [0.5, 0.6]}}
        (run_dir / "postprocessing.json").write_text(json.dumps(choice))

    monkeypatch.setattr(run_module, "evaluate_run", choose)
    said = []
    run_module._choose_postprocessing(tmp_path, torch.device("cpu"), said.append, ["background", "RV", "Myo", "LV"])
    assert said == [f"postprocessing chosen on val: {line}", "  val Dice raw -> largest component: RV 50.0 -> 60.0"]


def test_report_of_a_single_run_and_of_a_folder_of_runs(tiny_run, tmp_path, capsys):
    """#46.10: `mona report RUN` reports a user's own run (after `mona evaluate RUN --split test`), and
    `mona report RUNS/` the runs in it; the page names the run's own settings, machine and precision."""
    import shutil

    from mona.engine.environment import one_line

    run = shutil.copytree(tiny_run, tmp_path / "runs" / "mine", ignore=shutil.ignore_patterns("eval_test_*"))
    assert main(["report", str(run)]) == 2
    assert one_line_error(capsys, "report") == (
        f"mona report: error: {run}: no finished runs: none of the 1 run folder(s) here is scored on its test split "
        f"yet; score each with mona evaluate RUN --split test (e.g. {run})")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert one_line_error(capsys, "report") == (f"mona report: error: {tmp_path / 'empty'}: no run folders here: give "
                                                "a run folder, a folder of runs, or a mona reproduce --out folder")
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    for folder in (run, tmp_path / "runs"):
        assert main(["report", str(folder)]) == 0
        lines = (folder / "report.md").read_text().splitlines()
        assert lines[0] == "# Results of 1 finished runs"
        assert lines[2].startswith("- Protocol: the runs' config.yaml; data.image_size=32, ")
        environment = json.loads((run / "environment.json").read_text())[-1]
        assert f"- Hardware: {one_line(environment)}" in lines
        assert "- Paper Dice: You et al., Mine yOur owN Anatomy, TPAMI 2024 (arXiv 2209.13476), ACDC tables; not " \
               "ACDC, so not shown" in lines
        assert not (folder / "dice_vs_budget.png").exists() and "dice_vs_budget" not in "\n".join(lines)
        assert (folder / "report.html").is_file()
