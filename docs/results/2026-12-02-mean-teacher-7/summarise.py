"""Best val Dice per seed of the 7-patient cpu-small runs behind docs/results/2026-12-02-mean-teacher-7: the
grid's supervised and mean teacher (seeds 0-2) with runs/mt-why/{supervised,mean_teacher}_s* (more seeds), and
each other arm of runs/mt-why; then each arm against supervised and mean teacher: paired per val volume (seeds
averaged per volume, Wilcoxon signed-rank), and over seeds (Welch's t-test on the seeds' best val Dice, which
sees the seed-to-seed spread that the per-volume test averages away). Val only.
Usage: .venv/bin/python THIS_FILE [RUNS]; RUNS defaults to this folder's runs/ (lane.sh's runs/mt-why without
weights)."""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import ttest_ind, wilcoxon

root = Path(__file__).resolve().parents[3]
grid = root / "docs/results/2026-12-02-acdc-cpu-small-3000/runs"
extra = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "runs"


def seed_of(run: Path) -> int:
    return int(run.name.rsplit("_s", 1)[1])


arms: dict[str, list[Path]] = {}
for method in ("supervised", "mean_teacher"):
    arms[method] = sorted([*grid.glob(f"{method}_l7_s*"), *extra.glob(f"{method}_s*")], key=seed_of)
for name in sorted({p.name.rsplit("_s", 1)[0] for p in extra.glob("*_s*")} - set(arms)):
    arms[name] = sorted(extra.glob(f"{name}_s*"), key=seed_of)


def best_val(run: Path) -> float | None:
    """Best val Dice (%) of a finished run, None for one still training."""
    records = [json.loads(line) for line in open(run / "metrics.jsonl") if '"split": "val"' in line]
    done = any(r["iteration"] == 3000 for r in records) or (run / "eval_val_best").exists()
    return 100 * max(r["dice"] for r in records) if records and done else None


def volume_dice(runs: list[Path]) -> dict[str, float]:
    """Val Dice per volume (mean over classes) of the best checkpoint, averaged over the finished seeds."""
    per_volume = defaultdict(list)
    for run in runs:
        if (run / "eval_val_best/cases.csv").exists():
            for row in csv.DictReader(open(run / "eval_val_best/cases.csv")):
                per_volume[row["case"]].append(float(row["dice"]))
    return {case: 100 * float(np.mean(values)) for case, values in per_volume.items()}


finished: dict[str, list[float]] = {}
print("| arm | best val Dice per seed | mean ± std |\n| --- | --- | --- |")
for name, runs in arms.items():
    scores = {seed_of(run): best_val(run) for run in runs}
    done = finished[name] = [v for v in scores.values() if v is not None]
    cells = ", ".join(f"s{seed} {v:.1f}" for seed, v in scores.items() if v is not None)
    spread = f"{np.mean(done):.1f} ± {np.std(done, ddof=1) if len(done) > 1 else 0:.1f} ({len(done)} seeds)"
    print(f"| {name} | {cells} | {spread if done else ''} |")

print("\n| arm | against | mean gain per volume | ahead on | Wilcoxon p | Welch p over seeds |\n"
      "| --- | --- | --- | --- | --- | --- |")
for index, (name, runs) in enumerate(arms.items()):
    ours = volume_dice(runs)
    for reference in list(arms)[:min(index, 2)]:  # against supervised and mean teacher, each pair once
        theirs = volume_dice(arms[reference])
        cases = sorted(set(ours) & set(theirs))
        if cases:
            gains = np.array([ours[c] - theirs[c] for c in cases])
            over_seeds = ttest_ind(finished[name], finished[reference], equal_var=False).pvalue
            print(f"| {name} | {reference} | {gains.mean():+.1f} | {(gains > 0).sum()}/{len(cases)} | "
                  f"{wilcoxon(gains).pvalue:.2g} | {over_seeds:.2g} |")
