"""Val Dice of L_eqv's pixel masks at 3 and 7 patients (cpu-small, MONA), docs/results/2026-12-02-eqv-mask:
each arm of lane.sh's runs against the grid's own MONA run of the same budget and seed (the spec's
`foreground`; same stage 1 and the same batches). Per cell: best, last and mean val Dice over iterations
2000-3000; per budget: paired per val volume (seeds averaged, Wilcoxon) and over seeds (t-test of the
seeds' gains), with mona.experiments.statistics.paired_comparison on `eval_val_best`. Val only.
Usage: .venv/bin/python THIS_FILE [RUNS]; RUNS defaults to this folder's runs/ (lane.sh's runs/eqv-mask
without weights)."""
import json
import sys
from pathlib import Path

import numpy as np

from mona.experiments.statistics import paired_comparison

root = Path(__file__).resolve().parents[3]
grid = root / "docs/results/2026-12-02-acdc-cpu-small-3000/runs"
runs_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "runs"


def val_curve(run: Path) -> dict[int, float]:
    """Stage 2's val Dice (%) by iteration."""
    lines = open(run / "finetune/metrics.jsonl")
    return {r["iteration"]: 100 * r["dice"] for r in map(json.loads, lines) if r["split"] == "val"}


runs = []
for run in sorted(runs_dir.glob("*_l*_s*")):
    name, rest = run.name.split("_l", 1)
    labeled, seed = rest.split("_s")
    if (run / "eval_val_best/cases.csv").exists():  # finished
        cell = {"labeled": labeled, "seed": int(seed)}
        runs += [{"variant": name, "dir": run, **cell},
                 {"variant": "foreground", "dir": grid / f"mona_l{labeled}_s{seed}", **cell}]

print("| arm | labeled | seed | best val Dice | last | mean 2000-3000 | grid (foreground): best / last / mean |\n"
      "| --- | --- | --- | --- | --- | --- | --- |")
gains: dict[str, list[float]] = {}
for ours, theirs in zip(runs[::2], runs[1::2]):
    a, b = val_curve(ours["dir"]), val_curve(theirs["dir"])
    late = [i for i in a if i >= 2000]
    cells = [(max(c.values()), c[3000], np.mean([c[i] for i in late])) for c in (a, b)]
    gains.setdefault(ours["variant"], []).append(cells[0][0] - cells[1][0])
    print(f"| {ours['variant']} | {ours['labeled']} | {ours['seed']} | {cells[0][0]:.1f} | {cells[0][1]:.1f} | "
          f"{cells[0][2]:.1f} | {cells[1][0]:.1f} / {cells[1][1]:.1f} / {cells[1][2]:.1f} |")
for arm, arm_gains in gains.items():
    print(f"\n{arm}: best val Dice minus the grid's, per cell: {', '.join(f'{g:+.1f}' for g in arm_gains)}; "
          f"mean {np.mean(arm_gains):+.2f}, ahead in {sum(g > 0 for g in arm_gains)} of {len(arm_gains)}")

print("\n| labeled | arm | seeds | mean gain per val volume | gain per seed | ahead on | Wilcoxon p "
      "| t-test p (seeds) |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
for labeled in sorted({r["labeled"] for r in runs}, key=int):
    for arm in sorted({r["variant"] for r in runs} - {"foreground"}):
        result = paired_comparison(runs, arm, "foreground", labeled, evaluation="eval_val_best")
        if result is None:  # the arm did not run at this budget
            continue
        p_values = ("-" if p is None else f"{p:.2g}" for p in (result["p_value"], result["seed_p_value"]))
        print(f"| {labeled} | {arm} | {','.join(map(str, result['seeds']))} | {100 * result['gain']:+.1f} | "
              f"{' / '.join(f'{100 * g:+.1f}' for g in result['seed_gains'])} | "
              f"{result['ahead']}/{result['volumes']} | {' | '.join(p_values)} |")
