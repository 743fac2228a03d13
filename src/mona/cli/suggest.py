"""Suggest which unlabeled training scans to annotate next.

  mona suggest runs/mona3 -o next/
  mona suggest runs/mona3 -o next/ --n 4

Every training case of the run's dataset outside its labeled budget (mona.json's `unlabeled_cases`,
or the volumes of train_slices.list beyond the budget) is segmented by the run's best checkpoint and
given its expected Dice (the quality estimate of `mona predict --quality`, fitted on the run's val
volumes and cached in RUN/quality_model.json). The N cases expected worst are suggested, one per
patient before a second (patient = the case name before `_frameNN`), into OUT/suggest.csv (`rank`,
`case`, `patient`, `quality` = expected Dice, lowest first, then its parts) and OUT/index.html (each
suggested case's slices with the predicted outlines and the uncertainty map). Annotate them, prepare
the dataset again with their masks, and train on (see docs/own-data.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mona.cli.predict import _positive
from mona.evaluation.suggest import suggest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished training run folder")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--n", type=_positive, default=10, metavar="N", help="how many cases to suggest (default 10)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    ranked = suggest(args.run, args.out, args.n, args.device, progress=not args.no_progress)
    for row in ranked:
        print(f"{row['rank']:3d}  {row['case']}  expected Dice {row['quality']:.3f}")
    print(f"{len(ranked)} suggestions -> {args.out / 'suggest.csv'}, {args.out / 'index.html'}")
    return 0
