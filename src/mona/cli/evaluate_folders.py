"""Score a folder of predicted label volumes against a folder of truths (`--pred DIR --truth DIR`);
masks in other values than 0..C-1 (0/255, or the values `mona predict` wrote) with `--label-values`.

The main CLI adds these arguments to its `evaluate` verb and calls `run_folders`;
`MonaError`s go up to it, which prints them in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mona.errors import LabelRangeError, MonaError
from mona.evaluation.report import compare_folders, format_table, write_csv, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --pred, --truth, --num-classes, --spacing-from, --json and --csv (optional in argparse so
    the verb can also take a run folder; `run_folders` checks the ones it needs)."""
    group = parser.add_argument_group("compare two folders")
    group.add_argument("--pred", type=Path, metavar="DIR", help="predicted label volumes (.nii.gz, .nii, .h5)")
    group.add_argument("--truth", type=Path, metavar="DIR", help="truth label volumes, matched to --pred by name")
    group.add_argument("--num-classes", type=int, metavar="C", help="number of classes, background included")
    group.add_argument("--label-values", type=int, nargs="+", metavar="V",
                       help="the values the masks hold for classes 0, 1, ... (e.g. 0 255), when not 0..C-1; "
                       "sets --num-classes")
    group.add_argument(
        "--spacing-from", choices=("truth", "pred", "none"), default="truth",
        help="whose voxel spacing gives distances in mm ('none': in voxels, as the papers report)",
    )
    group.add_argument("--json", type=Path, metavar="FILE", help="write the per-class summary here")
    group.add_argument("--csv", type=Path, metavar="FILE", help="write one row per case and class here")


def run_folders(args: argparse.Namespace) -> int:
    """Compare the folders, print the table, write the requested files; returns the exit code 0."""
    if args.pred is None or args.truth is None:
        raise MonaError("comparing folders needs both --pred DIR and --truth DIR")
    values = args.label_values
    if values is not None and (len(set(values)) != len(values) or len(values) < 2):
        raise MonaError(f"--label-values needs 2 or more distinct values (background first), got {values}")
    if values is not None and args.num_classes not in (None, len(values)):
        raise MonaError(f"--num-classes {args.num_classes} disagrees with the {len(values)} --label-values")
    num_classes = len(values) if values is not None else args.num_classes
    if num_classes is None or num_classes < 2:
        raise MonaError("--num-classes C (2 or more, background included) is required with --pred and --truth")
    try:
        rows, summary = compare_folders(args.pred, args.truth, num_classes, spacing_from=args.spacing_from,
                                        label_values=values)
    except LabelRangeError as error:
        if values is None:
            raise MonaError(f"{error}; masks in other values (e.g. 0/255) are read with --label-values 0 255") \
                from None
        raise
    print(format_table(summary))
    if args.csv is not None:
        write_csv(rows, args.csv)
    if args.json is not None:
        write_json(summary, args.json)
    return 0
