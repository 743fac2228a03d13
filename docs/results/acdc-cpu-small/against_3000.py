"""What doubling cpu-small's iterations did on test: each run of this grid (6000 iterations) against the
archived grid's run (3000 iterations, docs/results/2026-12-02-acdc-cpu-small-3000) of the same method,
budget and seed, paired per test volume with mona.experiments.report.paired_comparison (best checkpoints).
Read after the choice of 6000 was fixed on val (docs/results/2026-12-06-schedule-seeds); nothing is
chosen on it. Usage: .venv/bin/python docs/results/acdc-cpu-small/against_3000.py"""
from pathlib import Path

from mona.experiments.report import budget_key, collect, paired_comparison, seed_stats, variant_key

here = Path(__file__).resolve().parent
grids = {"6000": here, "3000": here.parent / "2026-12-02-acdc-cpu-small-3000"}

runs = []
for iterations, grid in grids.items():
    for run in collect(grid):
        runs.append({**run, "method": run["variant"], "variant": f"{run['variant']}@{iterations}"})

header = ["method", "labeled", "test Dice 3000", "test Dice 6000", "gain per seed", "ahead on",
          "Wilcoxon p (volumes)", "t-test p (seeds)"]
print("| " + " | ".join(header) + " |\n" + "| --- " * len(header) + "|")
cells = sorted({(r["method"], r["labeled"]) for r in runs}, key=lambda c: (variant_key(c[0]), budget_key(c[1])))
for method, labeled in cells:
    dice = {it: seed_stats([r["summaries"]["best"]["mean"]["dice"] for r in runs
                            if r["variant"] == f"{method}@{it}" and r["labeled"] == labeled]) for it in grids}
    result = paired_comparison(runs, f"{method}@6000", f"{method}@3000", labeled)
    if result is None:
        continue
    p_values = ("-" if p is None else f"{p:.2g}" for p in (result["p_value"], result["seed_p_value"]))
    print(f"| {method} | {labeled} | {100 * dice['3000'][0]:.1f} ± {100 * dice['3000'][1]:.1f} "
          f"| {100 * dice['6000'][0]:.1f} ± {100 * dice['6000'][1]:.1f} "
          f"| {' / '.join(f'{100 * g:+.1f}' for g in result['seed_gains'])} "
          f"| {result['ahead']}/{result['volumes']} | {' | '.join(p_values)} |")
