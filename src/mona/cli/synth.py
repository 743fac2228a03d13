"""Write the built-in synthetic cardiac phantom in the SSL4MIS layout (see `mona.data.phantom`).

  mona synth OUT [--patients 20] [--seed 0] [--size H W]

OUT must be new or empty; the dataset is built beside it and renamed into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mona.data.phantom import split_counts, write_phantom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="new (or empty) dataset folder")
    parser.add_argument("--patients", type=int, default=20, help="patients, two frames each (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"),
                        help="in-plane size in pixels (default 96 96)")


def run(args: argparse.Namespace) -> int:
    """Write the phantom and print one line: patients per split, training slices, folder."""
    out = write_phantom(args.out, patients=args.patients, seed=args.seed, size=tuple(args.size))
    train, val, test = split_counts(args.patients)
    slices = len((out / "train_slices.list").read_text().split())
    print(f"phantom: {train} train / {val} val / {test} test patients, {slices} training slices "
          f"of {args.size[0]}x{args.size[1]} -> {out}")
    return 0
