"""Experiment grid and report on a tiny phantom: each run is trained once, a repeated grid trains
nothing, an interrupted grid resumes its interrupted run, and the report's numbers are the runs'."""

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t
from scipy.stats import wilcoxon

import mona.engine.trainer as trainer_module
from mona.cli.main import main
from mona.data.phantom import write_phantom
from mona.engine.checkpoint import load_checkpoint
from mona.errors import MonaError, RunInterrupted
from mona.experiments import grid
from mona.experiments import report as report_module
from mona.experiments import runs as runs_module
from mona.experiments import statistics as statistics_module
from mona.experiments import tables as tables_module
from mona.experiments.grid import plan, record_grid, run_grid

pytestmark = pytest.mark.usefixtures("one_thread")

OVERRIDES = ["data.image_size=32", "train.iterations=4", "train.val_every=2", "train.progress=false",
             "train.channels_last=false", "data.batch_labeled=2", "data.batch_unlabeled=2"]
SPECS = plan(["supervised", "mean_teacher"], [1], [0, 1])


def test_plan_names_upper_bound_and_ablations():
    names = [spec.name for spec in plan(["supervised", "mona"], [1, 3], [0], ablate=3)]
    assert names[:4] == ["supervised_l1_s0", "supervised_l3_s0", "mona_l1_s0", "mona_l3_s0"]
    assert "supervised_lall_s0" in names
    assert [spec.name for spec in plan(["mona"], [3], [0], upper_bound=False)] == ["mona_l3_s0"]  # one cell
    ablations = [spec for spec in plan(["mona"], [1], [0, 1], ablate=3) if spec.overrides]
    assert {spec.overrides for spec in ablations} == {(f"mona.{p}=false",) for p in grid.ABLATIONS}
    assert all(spec.method == "mona" and spec.labeled == "3" for spec in ablations) and len(ablations) == 10


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """Run the grid three times: interrupted inside the 2nd run (after its checkpoint at iteration 2),
    again, then once more; returns the output folder and each pass's `train` calls (run, resume)."""
    root = tmp_path_factory.mktemp("grid")
    data = write_phantom(root / "data", patients=5, size=(32, 32), slices=(4, 5))
    out = root / "out"
    passes, interrupt, real_train, real_save = [[]], [True], grid.train, trainer_module.save_checkpoint

    def interrupting_save(path, state):
        real_save(path, state)
        if interrupt[0] and path.parent.name == SPECS[1].name and path.name == "last.pt" and state["iteration"] == 2:
            interrupt[0] = False
            raise KeyboardInterrupt  # Ctrl-C

    def counting_train(config, resume=False, overwrite=False, continue_with=""):
        passes[-1].append((config.out.split("/")[-1], resume))
        return real_train(config, resume, overwrite, continue_with)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grid, "train", counting_train)
        patch.setattr(trainer_module, "save_checkpoint", interrupting_save)
        with pytest.raises(RunInterrupted, match=r"Continue with: the same `mona reproduce` command"):
            run_grid(data, SPECS, "demo", out, OVERRIDES)  # the hint that also scores the run
        for _ in range(2):
            passes.append([])
            run_grid(data, SPECS, "demo", out, OVERRIDES)
    return out, passes


def test_every_run_trained_once_and_interrupted_run_resumed(grid_run):
    out, passes = grid_run
    first, second, third = passes
    assert [name for name, _ in first] == [SPECS[0].name, SPECS[1].name]
    assert second[0] == (SPECS[1].name, True)  # resumed from its last.pt, the first run not retrained
    assert [name for name, resume in second[1:]] == [spec.name for spec in SPECS[2:]]
    assert third == []
    for spec in SPECS:
        run = out / "runs" / spec.name
        assert (run / "eval_test_best" / "summary.json").is_file()
        assert load_checkpoint(run / "last.pt")["iteration"] == 4
        precision = "bf16" if trainer_module.fast_bf16(torch.device("cpu")) else "fp32"  # demo asks for bf16
        assert (run / "hardware.txt").read_text().strip().endswith(f", {precision}")


def test_post_processed_scores_follow_the_choice_on_val(grid_run):
    """Each run is also scored post-processed as its val choice says; a finished run that lacks
    those scores gets them from the next pass, without training."""
    out, _ = grid_run
    for spec in SPECS:
        run = out / "runs" / spec.name
        choice = json.loads((run / "postprocessing.json").read_text())["largest_component"]
        summary = json.loads((run / "eval_test_best_postprocessed" / "summary.json").read_text())
        assert summary["postprocess"] == "val" and summary["largest_component"] == choice
    run = out / "runs" / SPECS[0].name
    shutil.rmtree(run / "eval_test_best_postprocessed")
    (run / "postprocessing.json").unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grid, "train", lambda *args, **kwargs: pytest.fail("a finished run was trained again"))
        run_grid(out.parent / "data", SPECS, "demo", out, OVERRIDES)
    assert (run / "postprocessing.json").is_file() and (run / "eval_test_best_postprocessed" / "summary.json").is_file()


def parse_cell(text):
    mean, std = re.match(r"\s*([-\d.]+) ± ([-\d.]+)", text).groups()
    return float(mean), float(std)


def test_report_numbers_are_the_runs(grid_run):
    out, _ = grid_run
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    for png in ["dice_vs_budget.png", "montage_supervised.png", "montage_mean_teacher.png",
                *(f"curves_{spec.name}.png" for spec in SPECS)]:
        assert (out / png).stat().st_size > 1000 and f"({png})" in report
    checkpoints = ("best", "last", "best_postprocessed")
    summaries = {spec.name: {c: json.loads((out / "runs" / spec.name / f"eval_test_{c}" / "summary.json").read_text())
                             for c in checkpoints} for spec in SPECS}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(SPECS) * 3 * 4  # runs x (best, last, best post-processed) x (3 classes + mean)
    for row in rows:
        summary = summaries[row["run"]][row["checkpoint"]]
        expected = summary["mean"] if row["class"] == "mean" else next(
            c for c in summary["classes"] if c["name"] == row["class"])
        dice = expected["dice"] if row["class"] == "mean" else expected["dice"]["mean"]
        assert float(row["dice"]) == pytest.approx(dice)
    for method in ("supervised", "mean_teacher"):
        for checkpoint, label in (("best", "best on val"), ("last", "last"),
                                  ("best_postprocessed", "best on val, post-processed on val")):
            line = next(row for row in report.splitlines() if row.startswith(f"| {method} | 1 | {label} | 2 |"))
            cells = line.split("|")[1:-1]
            dice = [100 * summaries[f"{method}_l1_s{s}"][checkpoint]["mean"]["dice"] for s in (0, 1)]
            hd95 = [summaries[f"{method}_l1_s{s}"][checkpoint]["mean"]["hd95"] for s in (0, 1)]
            assert parse_cell(cells[4]) == pytest.approx((np.mean(dice), np.std(dice, ddof=1)), abs=0.051)
            assert cells[5].strip() == "-"  # the phantom is not ACDC: no paper numbers
            assert parse_cell(cells[7])[0] == pytest.approx(np.mean(hd95), abs=0.0051)
    assert "| supervised | all | best on val | 2 |" in report and "Not finished yet" not in report
    page = (out / "report.html").read_text()  # the same tables, curves and a slice browser per test volume
    assert "<tr><td>supervised</td><td>1</td><td>best on val</td><td>2</td>" in page
    assert page.count('<input type="range"') == 2 and "<figcaption>mean_teacher, 1 labeled</figcaption>" in page
    assert "learning curves, all labeled" in page and "http" not in page


def test_paired_table_is_the_volumes_of_both_methods(grid_run):
    out, _ = grid_run
    assert main(["report", str(out)]) == 0
    per_volume = {}
    for spec in SPECS:
        rows = list(csv.DictReader(open(out / "runs" / spec.name / "eval_test_best" / "cases.csv")))
        per_volume[spec.name] = {case: np.mean([float(r["dice"]) for r in rows if r["case"] == case])
                                 for case in {r["case"] for r in rows}}
    cases = sorted(per_volume["supervised_l1_s0"])
    gains = [np.mean([per_volume[f"mean_teacher_l1_s{s}"][c] - per_volume[f"supervised_l1_s{s}"][c] for s in (0, 1)])
             for c in cases]
    rows = (out / "report.md").read_text().splitlines()
    line = next(row for row in rows if row.startswith("| 1 | mean_teacher | supervised |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    ahead = sum(g > 0 for g in gains)
    seed_gains = [np.mean([per_volume[f"mean_teacher_l1_s{s}"][c] - per_volume[f"supervised_l1_s{s}"][c]
                           for c in cases]) for s in (0, 1)]
    if np.ptp(seed_gains) == 0:  # equal gains: no t-test
        seed_p = "-"
    else:
        seed_p = f"{2 * student_t.sf(abs(np.mean(seed_gains) / (np.std(seed_gains, ddof=1) / np.sqrt(2))), df=1):.2g}"
    seed_gains = " / ".join(f"{100 * g:+.1f}" for g in seed_gains)
    assert cells[3:8] == ["0,1", str(len(cases)), f"{100 * np.mean(gains):+.1f}", seed_gains, f"{ahead}/{len(cases)}"]
    assert cells[9] == seed_p


def test_paired_comparison_averages_seeds_per_volume(tmp_path):
    """Known per-class Dice: gains per volume are the seed mean of the class-mean differences."""
    rng = np.random.default_rng(0)
    dice = {(v, s): rng.uniform(0.3, 0.9, size=(6, 3)) for v in ("supervised", "mona") for s in (0, 1)}
    dice[("mona", 2)] = rng.uniform(size=(6, 3))  # a seed the baseline lacks: left out
    runs = []
    for (variant, seed), values in dice.items():
        run_dir = tmp_path / f"{variant}_{seed}" / "eval_test_best"
        run_dir.mkdir(parents=True)
        rows = [f"case{c},{k + 1},{values[c, k]}" for c in range(6) for k in range(3)]
        (run_dir / "cases.csv").write_text("case,class,dice\n" + "\n".join(rows) + "\n")
        runs.append({"variant": variant, "labeled": "3", "seed": seed, "dir": run_dir.parent})
    gains = np.mean([dice[("mona", s)].mean(axis=1) - dice[("supervised", s)].mean(axis=1) for s in (0, 1)], axis=0)
    result = statistics_module.paired_comparison(runs, "mona", "supervised", "3")
    assert result["seeds"] == [0, 1] and result["volumes"] == 6
    assert result["gain"] == pytest.approx(gains.mean())
    assert result["ahead"] == int((gains > 0).sum())
    assert result["p_value"] == pytest.approx(wilcoxon(gains).pvalue)
    seed_gains = [(dice[("mona", s)] - dice[("supervised", s)]).mean() for s in (0, 1)]
    assert result["seed_gains"] == pytest.approx(seed_gains)
    t_statistic = np.mean(seed_gains) / (np.std(seed_gains, ddof=1) / np.sqrt(2))  # one-sample t, 1 degree of freedom
    assert result["seed_p_value"] == pytest.approx(2 * student_t.sf(abs(t_statistic), df=1))
    assert statistics_module.paired_comparison(runs, "mona", "supervised", "7") is None
    one_seed = [r for r in runs if r["seed"] == 0]
    assert statistics_module.paired_comparison(one_seed, "mona", "supervised", "3")["seed_p_value"] is None
    for (variant, seed), values in dice.items():  # another evaluation folder (val) with Dice 1 - test's
        val_dir = tmp_path / f"{variant}_{seed}" / "eval_val_best"
        val_dir.mkdir()
        rows = [f"case{c},{k + 1},{1 - values[c, k]}" for c in range(6) for k in range(3)]
        (val_dir / "cases.csv").write_text("case,class,dice\n" + "\n".join(rows) + "\n")
    on_val = statistics_module.paired_comparison(runs, "mona", "supervised", "3", evaluation="eval_val_best")
    assert on_val["gain"] == pytest.approx(-gains.mean())


def test_reproduce_cli_skips_finished_runs(grid_run, monkeypatch, capsys):
    out, _ = grid_run
    monkeypatch.setattr(grid, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    args = ["reproduce", "--data", str(out.parent / "data"), "--methods", "supervised,mean_teacher", "--labeled", "1",
            "--seeds", "0,1", "--protocol", "demo", "--out", str(out), *OVERRIDES]
    assert main(args) == 0
    assert (out / "report.md").is_file() and f"6 runs in {out}/runs" in capsys.readouterr().out
    assert main([*args, "--no-upper-bound"]) == 0
    assert f"4 runs in {out}/runs" in capsys.readouterr().out
    (out / "report.md").unlink()
    assert main([*args, "--no-report"]) == 0
    assert not (out / "report.md").exists() and "report:" not in capsys.readouterr().out


def test_a_run_another_process_trains_is_skipped_then_finished_later(tmp_path, capsys):
    """Two `mona reproduce` lanes on one grid: a run whose .lock a live process holds is left to it."""
    data = write_phantom(tmp_path / "data", patients=5, size=(32, 32), slices=(4, 5))
    specs = plan(["supervised"], [1], [0])  # supervised_l1_s0 and the upper bound supervised_lall_s0
    busy = tmp_path / "out" / "runs" / specs[0].name
    busy.mkdir(parents=True)
    other_lane = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (busy / ".lock").write_text(f"{other_lane.pid} {socket.gethostname()}\n")
        run_grid(data, specs, "demo", tmp_path / "out", OVERRIDES)
        assert f"{specs[0].name}: skipped, another process is on it" in capsys.readouterr().out
        assert not grid.is_finished(busy) and not (busy / "config.yaml").exists()
        assert (busy / ".lock").read_text().split()[0] == str(other_lane.pid)
        assert grid.is_finished(tmp_path / "out" / "runs" / specs[1].name)
        report = report_module.build_report(tmp_path / "out").read_text()
        assert f"- Not finished yet (1 of 2 planned runs): {specs[0].name}\n" in report  # a partial grid says so
    finally:
        other_lane.kill()
        other_lane.wait()
    run_grid(data, specs, "demo", tmp_path / "out", OVERRIDES)  # that lane died: its lock is stale
    assert grid.is_finished(busy) and not (busy / ".lock").exists()


def test_report_without_runs_is_a_user_error(tmp_path):
    assert main(["report", str(tmp_path)]) == 2


def test_acdc_is_recognised_without_metadata(tmp_path):
    from mona.experiments.runs import acdc_like

    (tmp_path / "ACDC").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mona.json").write_text(json.dumps({"name": "phantom"}))
    assert acdc_like(str(tmp_path / "ACDC"), ["RV", "Myo", "LV"])
    assert not acdc_like(str(tmp_path / "ACDC"), ["liver", "tumour"])
    assert not acdc_like(str(tmp_path / "other"), ["RV", "Myo", "LV"])


def test_protocol_names_the_data_folder_without_dot_dots(tmp_path):
    from mona.config import load_config
    from mona.experiments.report import protocol_lines

    config = load_config(["demo"], [f"data.root={tmp_path}/runs/../data"]).to_dict()
    data_line = protocol_lines(tmp_path, [{"config": config}])[1]
    assert f"- Data: {tmp_path}/data;" in data_line and ".." not in data_line


def test_report_rebuilds_without_checkpoints(grid_run, tmp_path):
    """A report folder published without its .pt files (docs/results/) rebuilds with the same
    numbers and training time, keeping the montages it cannot redraw."""
    out, _ = grid_run
    for spec in SPECS:
        run = out / "runs" / spec.name
        val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
        assert val[-1]["train_seconds"] == pytest.approx(load_checkpoint(run / "last.pt")["metrics"]["train_seconds"])
    assert main(["report", str(out)]) == 0
    published = tmp_path / "published"
    shutil.copytree(out, published, ignore=shutil.ignore_patterns("*.pt", "tb"))
    (published / "montage_mean_teacher.png").unlink()
    assert main(["report", str(published)]) == 0
    original, rebuilt = (out / "report.md").read_text(), (published / "report.md").read_text()
    tables = [[line for line in text.splitlines() if line.startswith("|") or "wall time" in line]
              for text in (original, rebuilt)]
    assert tables[0] == tables[1] and len(tables[0]) > 10
    assert "(montage_supervised.png)\n(kept from an earlier build" in rebuilt
    assert "(no mean_teacher montage" in rebuilt and not (published / "montage_mean_teacher.png").exists()
    pages = [(folder / "report.html").read_text() for folder in (out, published)]
    assert [re.findall(r"<table>.*?</table>", page) for page in pages[1:]] == [re.findall(r"<table>.*?</table>",
                                                                                          pages[0])]
    assert "No slice browsers" in pages[1] and '<input type="range"' not in pages[1]


def test_grid_record_keeps_earlier_runs_and_refuses_another_protocol(tmp_path):
    path = tmp_path / "grid.json"
    record_grid(path, tmp_path / "data", "demo", ["train.iterations=4"], SPECS[:2])
    record_grid(path, tmp_path / "data", "demo", ["train.iterations=4"], SPECS[1:])
    grid_record = json.loads(path.read_text())
    assert [run["name"] for run in grid_record["runs"]] == [spec.name for spec in SPECS]
    with pytest.raises(MonaError, match="protocol 'demo', not 'cpu-small'"):
        record_grid(path, tmp_path / "data", "cpu-small", ["train.iterations=4"], SPECS)
    with pytest.raises(MonaError, match="overrides"):
        record_grid(path, tmp_path / "data", "demo", [], SPECS)
    assert json.loads(path.read_text()) == grid_record  # a refused call changes nothing
    path.write_text("{not json")
    with pytest.raises(MonaError, match="unreadable grid record"):
        record_grid(path, tmp_path / "data", "demo", [], SPECS)


def test_reproduce_into_a_grid_of_another_protocol_is_a_user_error(grid_run, monkeypatch, capsys):
    out, _ = grid_run
    monkeypatch.setattr(grid, "train", lambda *a, **k: pytest.fail("trained despite the protocol mismatch"))
    args = ["reproduce", "--data", str(out.parent / "data"), "--methods", "supervised", "--labeled", "1",
            "--seeds", "0", "--protocol", "cpu-small", "--out", str(out), *OVERRIDES]
    assert main(args) == 2
    assert "choose another --out" in capsys.readouterr().err


def test_results_page_says_which_targets_hold_per_seed():
    """#46.14: docs/results.md's per-seed claims are those of the published runs' test volumes: the paired
    target (ahead on >= 28 of 40, p < 0.01) holds on the seeds' mean, and at 7 patients not for seed 1."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    runs = [runs_module.load_run(d) for d in sorted((docs / "results" / "acdc-cpu-small" / "runs").iterdir())]
    per_seed = {(labeled, seed): statistics_module.paired_comparison([r for r in runs if r["seed"] == seed], "mona",
                                                                 "supervised", labeled)
                for labeled in ("1", "3", "7") for seed in (0, 1, 2)}
    assert [per_seed[("7", s)]["ahead"] for s in (0, 1, 2)] == [32, 24, 33]
    assert f"{per_seed[('7', 1)]['p_value']:.2g}" == "0.013"
    page = " ".join((docs / "results.md").read_text().split())
    assert "met on the three-seed mean" in page and "are all met, on every seed" not in page
    assert "at 7 patients seed 1 alone is ahead on 24 of 40 volumes (p 0.013; seeds 0 and 2: 32 and 33 of 40" in page
    assert all(per_seed[key]["ahead"] >= 36 and per_seed[key]["p_value"] <= 7e-9 for key in per_seed if key[0] != "7")


def test_slurm_array_tasks_side_by_side_train_one_run_each_and_the_last_writes_the_report(tmp_path, capsys):
    """`--slurm` writes a job array; its tasks, run here with bash two at once, each train their cell."""
    data = write_phantom(tmp_path / "data", patients=5, size=(32, 32), slices=(4, 5))
    out, script = tmp_path / "grid", tmp_path / "grid.sbatch"
    assert main(["reproduce", "--data", str(data), "--methods", "supervised", "--labeled", "1", "--seeds", "0,1",
                 "--no-upper-bound", "--protocol", "demo", "--out", str(out), "--slurm", str(script), "--gpus", "0",
                 "--time", "0:10:00", "--partition", "short", *OVERRIDES]) == 0
    text = script.read_text()
    assert "#SBATCH --array=0-1\n" in text and "#SBATCH --partition=short\n" in text and "--gpus" not in text
    assert "#SBATCH --time=0:10:00\n" in text and not (out / "runs").exists()  # nothing trained yet
    tasks = [subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "SLURM_ARRAY_TASK_ID": str(cell)})
             for cell in (0, 1)]
    logs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], logs
    assert ["this is run 0" in logs[0], "this is run 1" in logs[1]] == [True, True]
    assert all(grid.is_finished(out / "runs" / f"supervised_l1_s{seed}") for seed in (0, 1))
    assert any("every run is finished; report:" in log for log in logs)
    assert "supervised_l1_s1" in (out / "results.csv").read_text()
    assert main(["reproduce", "--data", str(data), "--out", str(out), "--cell", "2", "--seeds", "0,1",
                 "--methods", "supervised", "--labeled", "1", "--no-upper-bound", "--protocol", "demo"]) == 2
    assert "--cell 2 is not a run of this grid (0 to 1)" in capsys.readouterr().err


def test_mona_is_on_the_left_of_its_comparisons_with_the_peers(tmp_path):
    """A peer after MONA in METHODS (UniMatch) is compared as "MONA vs peer", gains in MONA's favour positive;
    a peer against the baselines before it keeps the peer on the left."""
    rows = {"supervised": 0.5, "mona": 0.8, "unimatch": 0.7}
    runs = []
    for variant, dice in rows.items():
        for seed in (0, 1):
            run_dir = tmp_path / f"{variant}_{seed}"
            (run_dir / "eval_test_best").mkdir(parents=True)
            lines = [f"case{c},{k},{dice + 0.01 * c}" for c in range(6) for k in (1, 2, 3)]
            (run_dir / "eval_test_best" / "cases.csv").write_text("case,class,dice\n" + "\n".join(lines) + "\n")
            runs.append({"variant": variant, "labeled": "3", "seed": seed, "dir": run_dir})
    table = tables_module.paired_table(runs)
    pairs = {(row[1], row[2]): row[5] for row in table.rows}
    assert pairs == {("mona", "supervised"): "+30.0", ("unimatch", "supervised"): "+20.0",
                     ("mona", "unimatch"): "+10.0"}
