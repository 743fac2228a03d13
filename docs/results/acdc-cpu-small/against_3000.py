"""What doubling cpu-small's iterations did on test: each run of this grid (6000 iterations) against the
archived grid's run (3000 iterations, docs/results/2026-12-02-acdc-cpu-small-3000) of the same method,
budget and seed, paired per test volume with mona.experiments.statistics.paired_comparison (best checkpoints).
Read after the choice of 6000 was fixed on val (docs/results/2026-12-06-schedule-seeds); nothing is
chosen on it. Usage: .venv/bin/python docs/results/acdc-cpu-small/against_3000.py"""
from pathlib import Path

from mona.experiments.html import Table
from mona.experiments.runs import budget_key, collect, variant_key
from mona.experiments.statistics import paired_comparison
from mona.experiments.tables import cell, markdown

here = Path(__file__).resolve().parent
grids = {"6000": here, "3000": here.parent / "2026-12-02-acdc-cpu-small-3000"}

runs = []
for iterations, grid in grids.items():
    for run in collect(grid):
        runs.append({**run, "method": run["variant"], "variant": f"{run['variant']}@{iterations}"})

table = Table("Each run at 6000 iterations against its 3000-iteration twin (test, best on val)",
              ["method", "labeled", "test Dice 3000", "test Dice 6000", "gain per seed", "ahead on",
               "Wilcoxon p (volumes)", "t-test p (seeds)"], [])
cells = sorted({(r["method"], r["labeled"]) for r in runs}, key=lambda c: (variant_key(c[0]), budget_key(c[1])))
for method, labeled in cells:
    result = paired_comparison(runs, f"{method}@6000", f"{method}@3000", labeled)
    if result is None:
        continue
    dice = [cell([r["summaries"]["best"]["mean"]["dice"] for r in runs
                  if r["variant"] == f"{method}@{it}" and r["labeled"] == labeled], 100.0, 1)
            for it in ("3000", "6000")]
    p_values = ["-" if p is None else f"{p:.2g}" for p in (result["p_value"], result["seed_p_value"])]
    table.rows.append([method, labeled, *dice, " / ".join(f"{100 * g:+.1f}" for g in result["seed_gains"]),
                       f"{result['ahead']}/{result['volumes']}", *p_values])
print("\n".join(markdown(table)))
