"""Val Dice of cpu-small with a longer schedule (docs/results/2026-12-02-schedule and 2026-12-06-schedule-seeds):
each run (lane.sh's runs/schedule/NAME_METHOD_lL_sS, or a grid's METHOD_lL_sS) against the 3000-iteration
grid's run of the same method, budget and seed (same stage 1 for MONA). Per cell: best, last, and mean val
Dice over the last third of the run, and that mean's gain over the grid's; per budget and method: paired per
val volume (best checkpoints, pooled over seeds, Wilcoxon, and each seed's mean gain) with
mona.experiments.statistics.paired_comparison on `eval_val_best`; and MONA's val lead over every other method
at each schedule. A run is labelled by its iterations. Val only.
Usage: .venv/bin/python THIS_FILE [RUNS ...]; RUNS defaults to this folder's runs/ (lane.sh's runs/schedule
without weights); several folders are read together, and where two hold a run of the same method, budget, seed
and iterations the first folder's is used (the others are listed at the end)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import yaml

from mona.experiments.statistics import paired_comparison

root = Path(__file__).resolve().parents[3]
grid = root / "docs/results/2026-12-02-acdc-cpu-small-3000/runs"
runs_dirs = [Path(a) for a in sys.argv[1:]] or [Path(__file__).parent / "runs"]


def val_curve(run: Path) -> dict[int, float]:
    """The last stage's val Dice (%) by iteration."""
    metrics = run / "finetune/metrics.jsonl" if (run / "finetune").is_dir() else run / "metrics.jsonl"
    return {r["iteration"]: 100 * r["dice"] for r in map(json.loads, open(metrics)) if r["split"] == "val"}


def summary(curve: dict[int, float]) -> tuple[float, float, float]:
    """Best, last, and mean over the last third of the run."""
    end = max(curve)
    return max(curve.values()), curve[end], float(np.mean([d for i, d in curve.items() if i > 2 * end / 3]))


def budget_order(labeled: str) -> float:
    """Labeled budgets in order, `all` last."""
    return float("inf") if labeled == "all" else int(labeled)


pairs, seen, left_out = [], set(), []
# sorted is stable: within a cell, the folders in the order given
for run in sorted((r for d in runs_dirs for r in d.glob("*_l*_s*")), key=lambda r: re.sub(r"^it\d+_", "", r.name)):
    if not (run / "eval_val_best/cases.csv").exists():  # not finished
        continue
    method, labeled, seed = re.fullmatch(r"(?:\w+?_)?(supervised|mean_teacher|mona)_l(\w+)_s(\d+)", run.name).groups()
    name = f"it{yaml.safe_load((run / 'config.yaml').read_text())['train']['iterations']}"
    if (method, labeled, seed, name) in seen:
        left_out.append(run)
        continue
    seen.add((method, labeled, seed, name))
    cell = {"labeled": labeled, "seed": int(seed), "method": method}
    pairs.append(({"variant": f"{method}_{name}", "dir": run, **cell},
                  {"variant": f"{method}_grid", "dir": grid / f"{method}_l{labeled}_s{seed}", **cell}))
# per-volume val scores; the grid's restored seed-0 1-patient runs have none
runs = [r for pair in pairs for r in pair if (r["dir"] / "eval_val_best/cases.csv").exists()]

print("| method | labeled | seed | iterations | best val Dice | last | mean last third "
      "| grid (3000): best / last / mean | late-third gain |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
late_gains: dict[tuple[str, str], list[float]] = {}
for ours, theirs in pairs:
    a, b = val_curve(ours["dir"]), val_curve(theirs["dir"])
    (best, last, late), (g_best, g_last, g_late) = summary(a), summary(b)
    late_gains.setdefault((ours["method"], ours["labeled"]), []).append(late - g_late)
    print(f"| {ours['method']} | {ours['labeled']} | {ours['seed']} | {max(a)} | {best:.1f} | {last:.1f} "
          f"| {late:.1f} | {g_best:.1f} / {g_last:.1f} / {g_late:.1f} | {late - g_late:+.1f} |")

print("\n| method | labeled | seeds | late-third gain, mean (min) |\n| --- | --- | --- | --- |")
for (method, labeled), gains in sorted(late_gains.items(), key=lambda item: budget_order(item[0][1])):
    print(f"| {method} | {labeled} | {len(gains)} | {np.mean(gains):+.1f} ({min(gains):+.1f}) |")

names = sorted({r["variant"].rsplit("_", 1)[1] for r in runs} - {"grid"})
methods = sorted({r["method"] for r in runs}, key=lambda m: (m != "mona", m))  # MONA first
comparisons = [(f"{m}_{n}", f"{m}_grid") for n in names for m in methods] + [
    (f"mona_{n}", f"{m}_{n}") for n in ["grid", *names] for m in methods[1:]]  # each schedule against 3000; MONA's lead
print("\n| labeled | arm | against | seeds | mean gain per val volume | each seed's gain | ahead on | Wilcoxon p |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- |")
for labeled in sorted({r["labeled"] for r in runs}, key=budget_order):
    for arm, reference in comparisons:
        result = paired_comparison(runs, arm, reference, labeled, evaluation="eval_val_best")
        if result is None:  # not both run at this budget
            continue
        p_value = "-" if result["p_value"] is None else f"{result['p_value']:.2g}"
        print(f"| {labeled} | {arm} | {reference} | {','.join(map(str, result['seeds']))} | "
              f"{100 * result['gain']:+.1f} | {' '.join(f'{100 * g:+.1f}' for g in result['seed_gains'])} | "
              f"{result['ahead']}/{result['volumes']} | {p_value} |")
if left_out:
    print("\nLeft out (a run of the same cell came first): " + ", ".join(str(r) for r in left_out))
