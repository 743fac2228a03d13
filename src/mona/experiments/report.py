"""The report of a grid folder (OUT/runs/<run>): results.csv, report.md and its PNG figures, report.html.
OUT may also be a folder of run folders, or one run folder (a user's own run): the report goes there.

Only finished runs (RUN/eval_test_best/summary.json) are read, so the report can be rebuilt
at any time, also while a grid is still running. Aggregates are the mean and sample std
(n-1) over seeds of each run's test summary (itself the mean over cases, then classes).
Seed means hide how often a method wins: the paired table compares two methods volume by
volume on the test split (Dice averaged over classes and over the seeds both have run).
The paper's ACDC Dice (MONA_SPEC sections 7-8) is shown beside ours when the dataset is
ACDC and the budget is one the paper reports; elsewhere "-". The tables add the best
checkpoint post-processed as chosen on val (RUN/eval_test_best_postprocessed/) for the runs
that have it; the paired table and the figures score the raw argmax, as the paper does.
No checkpoint is needed: training times come from the runs' metrics.jsonl, and montages are
redrawn only where the data folder and the runs' best.pt are present, so a report folder
published without its checkpoints (docs/results/) rebuilds and keeps its montages.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.stats import ttest_1samp, wilcoxon

from mona.data.io import atomic_path
from mona.data.ssl4mis import ACDC_CLASSES, dataset_info, load_volumes
from mona.engine.checkpoint import load_checkpoint
from mona.engine.environment import describe, one_line
from mona.engine.run import load_run_model, run_checkpoint
from mona.engine.run_folder import is_run_folder, stage_folders
from mona.engine.trainer import resolve_device
from mona.errors import MonaError
from mona.evaluation.inference import predict_volume
from mona.evaluation.report import METRICS
from mona.experiments.grid import ABLATIONS, is_finished
from mona.experiments.html import (
    Table,
    learning_curves,
    png_uri,
    predicted_labels,
    read_records,
    slice_browser,
    write_page,
)
from mona.methods import METHODS

# RUN/eval_test_<key>/ -> its label in the tables; a run's post-processed scores are shown where it has them
CHECKPOINTS = {"best": "best on val", "last": "last", "best_postprocessed": "best on val, post-processed on val"}
CSV_COLUMNS = ("run", "method", "labeled", "seed", "checkpoint", "class", *METRICS, "unit", "sec_per_iter")
# MONA_SPEC section 8 (ACDC test Dice %, 1 / 3 / 7 labeled patients; UNet with all labels) and
# section 7 (ablations at 1 patient)
PAPER_ACDC_DICE = {
    ("supervised", "1"): 40.3, ("supervised", "3"): 51.7, ("supervised", "7"): 79.5, ("supervised", "all"): 91.5,
    ("mean_teacher", "1"): 42.9, ("mean_teacher", "3"): 58.3, ("mean_teacher", "7"): 80.1,
    ("mona", "1"): 82.6, ("mona", "3"): 86.9, ("mona", "7"): 87.7,
    ("mona_no_tailness", "1"): 60.9, ("mona_no_diversity", "1"): 75.2,
    # peers' published figures (docs/methods/peers.md): UniMatch's README (checkpoint chosen on val + test),
    # BCP's paper as TraCoCo's results table quotes it; ABD's could not be read from its paper or repository
    ("unimatch", "1"): 85.4, ("unimatch", "3"): 88.9, ("unimatch", "7"): 89.9,
    ("bcp", "3"): 87.6, ("bcp", "7"): 88.8,
}
PROTOCOL_KEYS = ("data.image_size", "data.batch_labeled", "data.batch_unlabeled", "train.iterations",
                 "train.val_every", "train.amp", "optim.lr", "mona.pretrain_iterations",
                 "mona.finetune_batch_labeled", "mona.finetune_batch_unlabeled", "mona.representation_stride")
PAPER_SOURCE = "You et al., Mine yOur owN Anatomy, TPAMI 2024 (arXiv 2209.13476), ACDC tables"
MONTAGE_SLICES = 3
BROWSER_VOLUMES = 3  # test volumes with a slice browser in report.html


def variant_of(config: dict) -> str:
    """The method, or `mona_no_<component>` for a MONA run with ablation switches off."""
    if config["method"] != "mona":
        return config["method"]
    off = [part for part in ABLATIONS if not config["mona"][part]]
    return "mona_no_" + "_".join(off) if off else "mona"


def budget_key(labeled: str) -> float:
    return math.inf if labeled == "all" else float(labeled)


def variant_key(variant: str) -> tuple[int, str]:
    order = list(METHODS)
    return (order.index(variant) if variant in order else len(order), variant)


def stage_timing(stage: Path) -> tuple[float, int]:
    """Training seconds and iterations of one stage: from its last val record, or from `last.pt` for
    runs logged before val records carried `train_seconds`."""
    val = [r for r in read_records(stage) if r["split"] == "val"]
    if val and "train_seconds" in val[-1]:
        return val[-1]["train_seconds"], val[-1]["iteration"]
    if not (stage / "last.pt").is_file():
        raise MonaError("no training time: the last val record has no train_seconds and last.pt is missing",
                        stage / "metrics.jsonl")
    state = load_checkpoint(stage / "last.pt")
    return state["metrics"].get("train_seconds", 0.0), state["iteration"]


def load_run(run_dir: Path) -> dict:
    """A finished run: its config, variant, test summaries per checkpoint and training time."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    timings = [stage_timing(stage) for stage in stage_folders(run_dir)]
    seconds, iterations = sum(s for s, _ in timings), sum(i for _, i in timings)
    return {
        "name": run_dir.name, "dir": run_dir, "config": config, "variant": variant_of(config),
        "labeled": str(config["data"]["labeled"]), "seed": config["train"]["seed"],
        "summaries": {c: json.loads((run_dir / f"eval_test_{c}" / "summary.json").read_text()) for c in CHECKPOINTS
                      if (run_dir / f"eval_test_{c}" / "summary.json").is_file()},
        "train_seconds": seconds, "sec_per_iter": seconds / iterations if iterations else float("nan"),
        "hardware": run_hardware(run_dir),
    }


def run_hardware(run_dir: Path) -> str:
    """The machine and precision a run trained on: its `hardware.txt` (grid runs), else the last start
    recorded in its `environment.json`; "" for a run from before either."""
    if (run_dir / "hardware.txt").is_file():
        return (run_dir / "hardware.txt").read_text().strip()
    try:
        return one_line(json.loads((run_dir / "environment.json").read_text())[-1])
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return ""


def run_folders(out: Path) -> list[Path]:
    """The run folders a report of OUT covers: OUT/runs/* (a `mona reproduce` folder), OUT itself when
    it is a run, else the runs directly in OUT (a folder of runs)."""
    if (out / "runs").is_dir():
        return [d for d in sorted((out / "runs").iterdir()) if d.is_dir()]
    if is_run_folder(out):
        return [out]
    return [d for d in sorted(out.iterdir()) if is_run_folder(d)] if out.is_dir() else []


def collect(out: Path) -> list[dict]:
    folders = run_folders(out)
    if not folders:
        raise MonaError("no run folders here: give a run folder, a folder of runs, or a mona reproduce --out "
                        "folder", out)
    runs = [load_run(d) for d in folders if is_finished(d)]
    if not runs:
        raise MonaError(f"no finished runs: none of the {len(folders)} run folder(s) here is scored on its test "
                        f"split yet; score each with mona evaluate RUN --split test (e.g. {folders[0]})", out)
    return sorted(runs, key=lambda r: (variant_key(r["variant"]), budget_key(r["labeled"]), r["seed"]))


def acdc_like(root: str, class_names: list[str]) -> bool:
    """ACDC: a mona.json named ACDC*, or no mona.json with ACDC's classes (the reader's default);
    when the data folder is gone, judged by its name."""
    root_path = Path(root)
    meta = root_path / "mona.json"
    if meta.is_file():
        return str(json.loads(meta.read_text()).get("name", "")).lower().startswith("acdc")
    if not root_path.is_dir():
        return "acdc" in root_path.name.lower()
    return class_names == ACDC_CLASSES[1:]  # the summaries name foreground classes only


def write_results_csv(runs: list[dict], path: Path) -> None:
    """One row per run x checkpoint x class, and the class mean as class `mean`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run in runs:
            for checkpoint, summary in run["summaries"].items():
                base = {"run": run["name"], "method": run["variant"], "labeled": run["labeled"], "seed": run["seed"],
                        "checkpoint": checkpoint, "unit": summary["unit"], "sec_per_iter": run["sec_per_iter"]}
                for entry in summary["classes"]:
                    writer.writerow({**base, "class": entry["name"], **{m: entry[m]["mean"] for m in METRICS}})
                writer.writerow({**base, "class": "mean", **summary["mean"]})


def seed_stats(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def cell(values: list[float], scale: float, decimals: int) -> str:
    """`mean ± std` over seeds, or the value alone for a single seed."""
    mean, std = seed_stats(values)
    return f"{mean * scale:.{decimals}f}" + (f" ± {std * scale:.{decimals}f}" if len(values) > 1 else "")


def groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Runs by (variant, labeled budget), in table order."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        grouped[(run["variant"], run["labeled"])].append(run)
    return grouped


def metric_cells(summaries: list[dict], pick) -> list[str]:
    """Dice and Jaccard in %, HD95 and ASD in the summary's unit, each mean ± std over seeds."""
    return [cell([pick(s)[m] for s in summaries], scale, decimals)
            for m, scale, decimals in zip(METRICS, (100.0, 100.0, 1.0, 1.0), (1, 1, 2, 2))]


def tables(runs: list[dict], acdc: bool) -> list[Table]:
    """The mean-over-classes table (with the paper's Dice and per-class Dice) and the per-class table."""
    first = runs[0]["summaries"]["best"]
    names = [c["name"] for c in first["classes"]]
    unit = first["unit"]
    overall = Table("Test metrics, mean over classes (mean ± std over seeds)",
                    ["method", "labeled", "checkpoint", "seeds", "Dice %", "paper Dice %", "Jaccard %",
                     f"HD95 ({unit})", f"ASD ({unit})", *(f"Dice {n} %" for n in names), "training min a run"], [],
                    note="Training minutes a run (the steps of every stage, without validation) on the run's own "
                         "machine: runs that trained on different CPUs or precisions (hardware.txt) do not compare.")
    per_class = Table("Test metrics per class (mean ± std over seeds)",
                      ["method", "labeled", "checkpoint", "class", "Dice %", "Jaccard %", f"HD95 ({unit})",
                       f"ASD ({unit})"], [])
    for (variant, labeled), members in groups(runs).items():
        paper = PAPER_ACDC_DICE.get((variant, labeled)) if acdc else None
        for checkpoint, label in CHECKPOINTS.items():
            summaries = [r["summaries"][checkpoint] for r in members if checkpoint in r["summaries"]]
            if not summaries:
                continue
            class_dice = [cell([s["classes"][k]["dice"]["mean"] for s in summaries], 100.0, 1)
                          for k in range(len(names))]
            means = metric_cells(summaries, lambda s: s["mean"])
            minutes = cell([r["train_seconds"] / 60 for r in members if checkpoint in r["summaries"]], 1.0, 0)
            overall.rows.append([variant, labeled, label, str(len(summaries)), means[0],
                                 str(paper) if paper is not None else "-", *means[1:], *class_dice, minutes])
            for k, name in enumerate(names):
                cells = metric_cells(summaries, lambda s, k=k: {m: s["classes"][k][m]["mean"] for m in METRICS})
                per_class.rows.append([variant, labeled, label, name, *cells])
    return [overall, per_class]


def markdown(table: Table) -> list[str]:
    """A table as markdown lines: its caption as a heading, its note, the rows."""
    note = [table.note, ""] if table.note else []
    return [f"## {table.caption}", "", *note, "| " + " | ".join(table.header) + " |",
            "| --- " * len(table.header) + "|", *("| " + " | ".join(row) + " |" for row in table.rows)]


def volume_dice(run: dict, evaluation: str = "eval_test_best") -> dict[str, float]:
    """Dice per volume, averaged over classes, of one evaluation (RUN/eval_test_best/cases.csv by default)."""
    per_class: dict[str, list[float]] = defaultdict(list)
    with open(run["dir"] / evaluation / "cases.csv", newline="") as f:
        for row in csv.DictReader(f):
            per_class[row["case"]].append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in per_class.items()}


def paired_comparison(runs: list[dict], variant: str, reference: str, labeled: str,
                      evaluation: str = "eval_test_best") -> dict | None:
    """`variant` against `reference` at one budget, volume by volume (best checkpoints, test split;
    `evaluation="eval_val_best"` pairs the val volumes instead).

    Each volume's Dice is averaged over classes and over the seeds both variants have run; the
    differences of the test volumes give the mean gain, the number of volumes where `variant`
    is ahead, and a two-sided Wilcoxon signed-rank p-value (None with fewer than two non-zero
    differences). That test sees volumes, not seeds, so `seed_gains` (each seed's mean gain over
    the volumes) shows the seed-to-seed spread it cannot, and `seed_p_value` tests them: a
    two-sided one-sample t-test of the seeds' gains against 0 (None with fewer than two seeds or
    identical gains). None when the two share no seed.
    """
    def by_seed(name: str) -> dict[int, dict[str, float]]:
        return {r["seed"]: volume_dice(r, evaluation) for r in runs if r["variant"] == name and r["labeled"] == labeled}

    ours, theirs = by_seed(variant), by_seed(reference)
    seeds = sorted(ours.keys() & theirs.keys())
    if not seeds:
        return None
    cases = sorted(set.intersection(*(set(ours[s]) & set(theirs[s]) for s in seeds)))
    per_seed = np.array([[ours[s][c] - theirs[s][c] for c in cases] for s in seeds])
    gains = per_seed.mean(axis=0)
    p_value = float(wilcoxon(gains).pvalue) if np.count_nonzero(gains) >= 2 else None
    seed_gains = per_seed.mean(axis=1)
    seed_p_value = float(ttest_1samp(seed_gains, 0.0).pvalue) if len(seeds) >= 2 and np.ptp(seed_gains) > 0 else None
    return {"seeds": seeds, "volumes": len(cases), "gain": float(gains.mean()), "ahead": int((gains > 0).sum()),
            "p_value": p_value, "seed_gains": [float(g) for g in seed_gains], "seed_p_value": seed_p_value}


def paired_table(runs: list[dict]) -> Table | None:
    """Each variant against each of `METHODS` before it in table order, at every budget both ran; MONA
    always on the left, so that its rows against the peers after it (UniMatch, BCP, ABD) read as MONA's gain."""
    keys = list(groups(runs))
    rows = []
    for method, labeled in keys:
        for earlier in METHODS:
            if (earlier, labeled) not in keys or variant_key(earlier) >= variant_key(method):
                continue
            variant, reference = (earlier, method) if earlier == "mona" else (method, earlier)
            result = paired_comparison(runs, variant, reference, labeled)
            if result is None:
                continue
            p_value, seed_p_value = ("-" if p is None else f"{p:.2g}"
                                     for p in (result["p_value"], result["seed_p_value"]))
            seed_gains = " / ".join(f"{100 * g:+.1f}" for g in result["seed_gains"])
            rows.append([labeled, variant, reference, ",".join(map(str, result["seeds"])), str(result["volumes"]),
                         f"{100 * result['gain']:+.1f}", seed_gains, f"{result['ahead']}/{result['volumes']}",
                         p_value, seed_p_value])
    if not rows:
        return None
    return Table("Paired comparison per test volume (best on val)",
                 ["labeled", "method", "against", "seeds", "volumes", "mean gain (Dice points)", "gain per seed",
                  "ahead on", "Wilcoxon p (volumes)", "t-test p (seeds)"], rows,
                 note="Dice averaged over classes and over the seeds both methods ran, per test volume; "
                      "two-sided Wilcoxon signed-rank test over the volumes. That test sees volumes, not seeds: "
                      "where the seeds' gains differ in sign, the difference is within seed-to-seed noise "
                      "whatever its p. The last column tests the seeds' gains (one per seed, two-sided "
                      "one-sample t-test against 0); with 3 seeds only a large, steady gain reaches p < 0.05.")


def protocol_lines(out: Path, runs: list[dict]) -> list[str]:
    """The preset named at `mona reproduce` (OUT/grid.json) and the settings the runs used."""
    grid = out / "grid.json"
    preset = f"`{json.loads(grid.read_text())['protocol']}` preset" if grid.is_file() else "the runs' config.yaml"
    settings = []
    for key in PROTOCOL_KEYS:
        section, name = key.split(".")
        relevant = [r for r in runs if section != "mona" or r["config"]["method"] == "mona"]
        values = sorted({str(r["config"][section][name]) for r in relevant})
        if values:
            settings.append(f"{key}={'/'.join(values)}")
    data = sorted({os.path.normpath(r["config"]["data"]["root"]) for r in runs})
    return [f"- Protocol: {preset}; " + ", ".join(settings),
            f"- Data: {', '.join(data)}; checkpoints chosen on val Dice only (`best on val`), `last` = final "
            "iteration; `post-processed on val`: each class keeps only its largest connected component where "
            "that raised its val Dice (the masks `mona predict` writes); every other row is the raw argmax"]


def unfinished_lines(out: Path, runs: list[dict]) -> list[str]:
    """The runs OUT/grid.json plans that are not finished yet: a partial grid says what it lacks."""
    grid = out / "grid.json"
    planned = [r["name"] for r in json.loads(grid.read_text())["runs"]] if grid.is_file() else []
    finished = {r["name"] for r in runs}
    missing = [name for name in planned if name not in finished]
    if not missing:
        return []
    return [f"- Not finished yet ({len(missing)} of {len(planned)} planned runs): {', '.join(missing)}"]


def plot_curves(run: dict, path: Path) -> None:
    """Training losses (log scale) and val Dice against iteration; MONA's fine-tuning follows its pre-training."""
    fig = Figure(figsize=(10, 3.6))
    losses, dice = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    offset = 0
    for stage in stage_folders(run["dir"]):
        prefix = f"{stage.name}/" if stage != run["dir"] else ""
        records = read_records(stage)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "val"]
        keys = sorted({k for r in train for k in r} - {"iteration", "split", "lr", "sec_per_iter", "data_wait"})
        for key in keys:
            points = [(offset + r["iteration"], r[key]) for r in train if key in r and r[key] > 0]
            if points:
                losses.plot(*zip(*points), label=prefix + key, linewidth=1, marker=".")
        if val:
            dice.plot([offset + r["iteration"] for r in val], [r["dice"] for r in val], marker="o", markersize=3,
                      label=f"{prefix}val Dice")
        offset += max((r["iteration"] for r in records), default=0)
    losses.set_yscale("log")
    losses.set(xlabel="iteration", ylabel="training loss", title=run["name"])
    dice.set(xlabel="iteration", ylabel="val Dice (mean over classes)", ylim=(0, 1))
    for ax in (losses, dice):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_dice_vs_budget(runs: list[dict], path: Path) -> None:
    """Test Dice (best on val) against labeled patients per method, mean ± std over seeds;
    the fully supervised upper bound is a dashed line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    budgets = sorted({r["labeled"] for r in runs if r["labeled"] != "all"}, key=budget_key)
    by_variant: dict[str, list[tuple[str, list[dict]]]] = defaultdict(list)
    for (variant, labeled), members in groups(runs).items():
        by_variant[variant].append((labeled, members))
    for variant, entries in by_variant.items():
        points = [(budgets.index(lab), *seed_stats([100 * r["summaries"]["best"]["mean"]["dice"] for r in members]))
                  for lab, members in entries if lab != "all"]
        if points:
            x, mean, std = zip(*points)
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=variant)
        for lab, members in entries:
            if lab == "all":
                mean, _ = seed_stats([100 * r["summaries"]["best"]["mean"]["dice"] for r in members])
                ax.axhline(mean, linestyle="--", color="grey", label=f"{variant}, all labels")
    ax.set_xticks(range(len(budgets)), budgets)
    ax.set(xlabel="labeled patients", ylabel="test Dice % (best on val)", title="Dice against label budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_montage(variant: str, runs: list[dict], path: Path) -> None:
    """The middle slice of the first 3 test volumes, one row per budget (first seed, best checkpoint):
    predicted contours solid, true contours dashed."""
    config = runs[0]["config"]
    info = dataset_info(config["data"]["root"], config["data"]["num_classes"])
    volumes = load_volumes(info, "test")[:MONTAGE_SLICES]
    device = resolve_device("cpu")
    colours = [colormaps["tab10"](c % 10) for c in range(info.num_classes - 1)]
    fig = Figure(figsize=(2.4 * len(volumes), 2.4 * len(runs) + 0.4), facecolor="black")
    for row, run in enumerate(runs):
        model, state = load_run_model(run["dir"], "best")
        for col, volume in enumerate(volumes):
            index = len(volume.image) // 2
            probs = predict_volume(model, volume.image[index : index + 1], state["image_size"], device)
            pred = probs.argmax(0)[0].numpy()
            ax = fig.add_subplot(len(runs), len(volumes), row * len(volumes) + col + 1)
            ax.imshow(volume.image[index], cmap="gray", interpolation="nearest")
            for cls in range(1, info.num_classes):
                for mask, style in ((pred, "solid"), (volume.label[index], "dashed")):
                    if (mask == cls).any():
                        ax.contour((mask == cls).astype(np.float32), levels=[0.5], colors=[colours[cls - 1]],
                                   linewidths=1.0, linestyles=style)
            ax.set_title(f"{volume.name} slice {index}\nlabeled {run['labeled']}", color="white", fontsize=7)
            ax.set_axis_off()
    fig.suptitle(f"{variant}: prediction solid, truth dashed ({', '.join(info.class_names[1:])})",
                 color="white", fontsize=9)
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())


def build_report(out: str | Path) -> Path:
    """Write OUT/results.csv, OUT/report.md and its figures from the finished runs; returns report.md."""
    out = Path(out)
    runs = collect(out)
    write_results_csv(runs, out / "results.csv")
    first = runs[0]
    acdc = acdc_like(first["config"]["data"]["root"], [c["name"] for c in first["summaries"]["best"]["classes"]])
    here = one_line(describe(resolve_device("auto"), "fp32"))
    hardware_lines = (sorted({r["hardware"] for r in runs if r["hardware"]})
                      or [f"{here} (the report's machine: the runs recorded none)"])
    total = sum(r["train_seconds"] for r in runs)
    lines = [f"# Results of {len(runs)} finished runs", "", *protocol_lines(out, runs), *unfinished_lines(out, runs),
             *(f"- Hardware: {h}" for h in hardware_lines),
             f"- Total training wall time: {total / 3600:.2f} h ({total:.0f} s, sum of the runs' train_seconds)",
             f"- Paper Dice: {PAPER_SOURCE}{'' if acdc else '; not ACDC, so not shown'}"]
    table_list = tables(runs, acdc) + [t for t in [paired_table(runs)] if t is not None]
    lines += ["", *(line for table in table_list for line in markdown(table) + [""]), "## Figures", ""]
    (out / "dice_vs_budget.png").unlink(missing_ok=True)  # an earlier build's, of other runs
    if len({run["labeled"] for run in runs}) > 1:  # one budget draws no curve
        plot_dice_vs_budget(runs, out / "dice_vs_budget.png")
        lines += ["![Dice against label budget](dice_vs_budget.png)", ""]
    data_here = Path(first["config"]["data"]["root"]).is_dir()
    by_variant: dict[str, dict[str, dict]] = defaultdict(dict)
    for run in runs:
        by_variant[run["variant"]].setdefault(run["labeled"], run)  # runs are sorted by seed: the first seed
    for variant, by_budget in by_variant.items():
        png = out / f"montage_{variant}.png"
        if data_here and all(run_checkpoint(run["dir"], "best").is_file() for run in by_budget.values()):
            plot_montage(variant, list(by_budget.values()), png)
            lines += [f"![{variant} test slices]({png.name})", ""]
        elif png.is_file():
            lines += [f"![{variant} test slices]({png.name})",
                      "(kept from an earlier build: the data folder or the runs' best.pt are not here)", ""]
        else:
            lines += [f"(no {variant} montage: it needs the data folder and the runs' best.pt)", ""]
    lines += ["### Learning curves", ""]
    for run in runs:
        plot_curves(run, out / f"curves_{run['name']}.png")
        lines += [f"![{run['name']}](curves_{run['name']}.png)", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    notes = [line[2:].replace("`", "") for line in lines if line.startswith("- ")]
    write_html(out, runs, notes, table_list)
    return out / "report.md"


def write_html(out: Path, runs: list[dict], notes: list[str], table_list: list[Table]) -> Path:
    """OUT/report.html: the report's tables, Dice against budget, the learning curves of each budget
    and slice browsers of the first test volumes with the first seed of each method and budget
    (where the data folder and those runs' best.pt are here)."""
    budget_plot = out / "dice_vs_budget.png"
    figures = [("Dice against label budget", png_uri(lambda buffer: buffer.write(budget_plot.read_bytes())))
               ] if budget_plot.is_file() else []
    for labeled in sorted({r["labeled"] for r in runs}, key=budget_key):
        members = {r["name"]: r["dir"] for r in runs if r["labeled"] == labeled}
        figures.append((f"learning curves, {labeled} labeled", learning_curves(members, f"{labeled} labeled")))
    first_seed: dict[tuple[str, str], dict] = {}
    for run in runs:
        first_seed.setdefault((run["variant"], run["labeled"]), run)
    config = runs[0]["config"]
    browsers = []
    if Path(config["data"]["root"]).is_dir() and all(run_checkpoint(r["dir"], "best").is_file()
                                                     for r in first_seed.values()):
        info = dataset_info(config["data"]["root"], config["data"]["num_classes"])
        volumes = load_volumes(info, "test")[:BROWSER_VOLUMES]
        predictions = {f"{variant}, {labeled} labeled": predicted_labels(run["dir"], volumes)
                       for (variant, labeled), run in first_seed.items()}
        browsers = [slice_browser(volume, {name: labels[i] for name, labels in predictions.items()}, info.class_names)
                    for i, volume in enumerate(volumes)]
    else:
        notes = notes + ["No slice browsers: they need the data folder and the runs' best.pt"]
    return write_page(out / "report.html", f"Results of {len(runs)} finished runs", notes, table_list, figures,
                      browsers)
