"""Rebuild the report of a `mona reproduce` folder from its finished runs, without training; or
write the report of one run folder, or of a folder of runs (your own runs).

  mona report OUT
  mona evaluate runs/mine --split test && mona report runs/mine

A run counts once it is scored on its test split (RUN/eval_test_best/, `mona evaluate RUN`).

Writes OUT/results.csv (one row per run x checkpoint x class), OUT/report.md (mean ± std
over seeds per method and budget, with the paper's ACDC numbers) and its PNG figures, and
OUT/report.html: the same tables, learning curves and a slice browser per test volume in one
self-contained page (the page `mona demo` writes too).
"""

from __future__ import annotations

import argparse

from mona.experiments.report import build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the folder given to mona reproduce --out, a folder of runs, "
                        "or one run folder")


def run(args: argparse.Namespace) -> int:
    report = build_report(args.out)
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0
