"""The `mona` command: one verb per job, each in its own module with `add_arguments` and `run`."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from mona import __version__
from mona.errors import MonaError

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
VERBS = {
    "demo": ("mona.cli.demo", "train supervised, mean teacher and MONA on the built-in phantom and compare them"),
    "synth": ("mona.cli.synth", "write the built-in synthetic cardiac phantom in the SSL4MIS layout"),
    "train": ("mona.cli.train", "train a method (supervised, mean_teacher, mona, unimatch, bcp, abd) on a dataset"),
    "evaluate": ("mona.cli.evaluate", "score a run on val/test volumes, or a folder of predictions against truths"),
    "predict": ("mona.cli.predict", "segment new scans (NIfTI, a DICOM series or h5) with a trained run"),
    "suggest": ("mona.cli.suggest", "rank a run's unlabeled training scans: which to annotate next"),
    "prepare": ("mona.cli.prepare", "convert raw ACDC, LiTS, MMWHS or nnU-Net datasets into mona's layout"),
    "reproduce": ("mona.cli.reproduce", "train and test a grid of methods x label budgets x seeds, then report"),
    "report": ("mona.cli.report", "rebuild the report (tables, figures) of a mona reproduce folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mona",
        description="Label-efficient medical image segmentation: MONA (Mine yOur owN Anatomy) and "
        "semi-supervised baselines on a 2D UNet, from a few labeled and many unlabeled scans.",
    )
    parser.add_argument("--version", action="version", version=f"mona {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (module_name, help_text) in VERBS.items():
        module = importlib.import_module(module_name)
        sub = verbs.add_parser(
            name, help=help_text, description=module.__doc__ or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting `key=value` overrides sit anywhere among a verb's flags."""
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if OVERRIDE.match(item)]
    if hasattr(args, "overrides") and overrides:
        args.overrides += overrides
        extra = [item for item in extra if item not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except MonaError as error:
        print(f"mona {args.verb}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
