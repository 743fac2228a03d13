"""Score segmentations with Dice, Jaccard, HD95 and ASD (medpy definitions).

  mona evaluate RUN_DIR [--split test] [--checkpoint best|last] [--postprocess none|val|all]
  mona evaluate --pred DIR --truth DIR --num-classes C [--json FILE] [--csv FILE]

A run is scored on its dataset's split volumes (slices predicted one by one, stacked);
results go to RUN_DIR/eval_<split>_<checkpoint>/ (cases.csv, summary.json). The raw argmax is
scored, as the paper and SSL4MIS report it; --postprocess val keeps only the largest connected
component of the classes where that raised val Dice (RUN/postprocessing.json, chosen for the
best checkpoint when training ended, none for another; mona predict's default) into
..._postprocessed/, --postprocess all does it for
every class into ..._largest/. Scoring val with the best checkpoint, raw, chooses again. Distances are
in mm when the dataset knows the spacing (mona.json), else in voxels; the table says which.
Empty masks: both empty scores Dice 1 and distance 0; one empty scores Dice 0 and the
volume's diagonal as distance (see mona.evaluation.metrics).
"""

from __future__ import annotations

import argparse

from mona.cli.evaluate_folders import add_arguments as add_folder_arguments
from mona.cli.evaluate_folders import run_folders
from mona.engine.run import POSTPROCESS, evaluate_run
from mona.evaluation.report import format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a training run folder")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--data", metavar="DIR", help="the run's dataset, when it moved from where the run recorded it")
    parser.add_argument("--postprocess", choices=POSTPROCESS, default="none",
                        help="keep only the largest connected component of no class (default), of the classes "
                        "chosen on val, or of all")
    add_folder_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.run_dir is None:
        return run_folders(args)
    print(f"{args.run_dir}: {args.split} split, {args.checkpoint} checkpoint", flush=True)
    summary = evaluate_run(args.run_dir, args.split, args.checkpoint, args.device,
                           postprocess=args.postprocess, data=args.data, progress=True)
    names = {entry["class"]: entry["name"] for entry in summary["classes"]}
    kept = ", ".join(names[c] for c in summary["largest_component"]) or "none"
    print(f"{summary['cases']} volumes, checkpoint of iteration {summary['iteration']}, "
          f"largest component only: {kept}")
    print(format_table(summary))
    return 0
