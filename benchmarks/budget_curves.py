"""Val curves of runs trained on from one run with different added masks (issue #47's judging of
`mona suggest`): which reaches what, how fast, and whether the differences are more than noise.

  python benchmarks/budget_curves.py .dev/q47/on_l3_suggest .dev/q47/on_l3_random1 .dev/q47/on_l3_random2 \\
      .dev/q47/on_l3_ssl4mis --reference 0.8552 --scratch docs/results/acdc-cpu-small/runs/mona_l7_s0

Per run (its last stage): val Dice at every validation, the best and where, and the first
iteration at which val Dice reached `--reference` (e.g. the from-scratch run's best val Dice at the
larger budget: how many iterations training on saves), and with `--scratch RUN` (that from-scratch
run) the first iteration, every stage counted, at which the scratch run reached each run's best.
Then each run against the first, volume by
volume on val (RUN/eval_val_best/cases.csv: the best checkpoint's val volumes, Dice averaged over
classes): mean gain, volumes ahead, two-sided Wilcoxon p. Val only: the test split is not read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from mona.engine.run_folder import read_stages, stage_folders
from mona.experiments.html import read_records
from mona.experiments.runs import volume_dice


def val_curve(run: Path) -> list[tuple[int, float]]:
    """(iteration, val Dice) of the run's last stage."""
    return [(r["iteration"], r["dice"]) for r in read_records(stage_folders(run)[-1]) if r["split"] == "val"]


def whole_run_curve(run: Path) -> list[tuple[int, float]]:
    """(iteration counted over every stage, val Dice) of all of a run's stages, in training order."""
    curve, offset = [], 0
    for stage, folder in zip(read_stages(run), stage_folders(run)):
        curve += [(offset + r["iteration"], r["dice"]) for r in read_records(folder) if r["split"] == "val"]
        offset += stage.get("iterations", 0)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", type=float, help="a val Dice to reach (0-1)")
    parser.add_argument("--scratch", type=Path, help="the from-scratch run at the larger budget")
    args = parser.parse_args(argv)
    curves = {run: dict(val_curve(run)) for run in args.runs}
    iterations = sorted({i for curve in curves.values() for i in curve})
    width = max(len(run.name) for run in args.runs)
    print("iteration  " + "  ".join(f"{run.name:>{width}}" for run in args.runs))
    for i in iterations:
        print(f"{i:>9}  " + "  ".join(f"{100 * curves[run][i]:>{width}.1f}" if i in curves[run] else f"{'-':>{width}}"
                                     for run in args.runs))
    for run in args.runs:
        best = max(curves[run].items(), key=lambda item: item[1])
        line = f"{run.name}: best val Dice {100 * best[1]:.1f} at {best[0]}"
        if args.reference is not None:
            reached = [i for i, dice in sorted(curves[run].items()) if dice >= args.reference]
            line += (f"; reaches {100 * args.reference:.1f} at iteration {reached[0]}" if reached
                     else f"; does not reach {100 * args.reference:.1f}")
        if args.scratch is not None:
            reached = [i for i, dice in whole_run_curve(args.scratch) if dice >= best[1]]
            line += (f"; {args.scratch.name} first reached it at iteration {reached[0]} (all stages)" if reached
                     else f"; {args.scratch.name} never reached it")
        print(line)
    first = volume_dice({"dir": args.runs[0]}, "eval_val_best")
    for run in args.runs[1:]:
        other = volume_dice({"dir": run}, "eval_val_best")
        cases = sorted(first.keys() & other.keys())
        gains = np.array([first[c] - other[c] for c in cases])
        p_value = f"{wilcoxon(gains).pvalue:.2g}" if np.count_nonzero(gains) >= 2 else "-"
        print(f"{args.runs[0].name} against {run.name} on {len(cases)} val volumes: mean gain "
              f"{100 * gains.mean():+.1f} Dice points, ahead on {(gains > 0).sum()}/{len(cases)}, Wilcoxon p {p_value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
