"""How well `mona predict --quality` ranks and predicts Dice on a split of a run's dataset (issue #47).

  python benchmarks/quality_check.py RUN --split test       # the judged figures
  python benchmarks/quality_check.py RUN --split val        # in-sample: the fit saw these volumes

The estimate is fitted on the run's val volumes only (or read from RUN/quality_model.json when it
was fitted for this checkpoint; --refit fits again), exactly as `mona predict --quality` does; the
split's volumes are then predicted as `predict` does (post-processing chosen on val) and their true
mean Dice over classes set against the estimate: Spearman, mean absolute error, and how many of the
k cases ranked worst (k = 10, or half a smaller split) are among the k truly worst. Beside it, the
issue's baselines, each with a line fitted on val for its MAE: the mean max-probability over the
predicted foreground, the whole-volume mean entropy (as 1 - entropy, so higher is better for all),
and the val mean Dice as a constant. The val evidence for the chosen form is printed first: each
candidate's leave-one-out MAE and Spearman over the val volumes, and the nested leave-one-out
figures of the whole procedure (each val volume estimated by the form chosen and fitted on the others).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from mona.config import config_from_dict
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.errors import MonaError
from mona.evaluation.predict import load_predictor
from mona.evaluation.quality import QualityModel, describe, load_quality_estimator, spearman
from mona.evaluation.report import write_csv


def worst_overlap(estimate, truth, k: int) -> int:
    """How many of the k cases with the lowest `estimate` are among the k with the lowest `truth`."""
    return len(set(np.argsort(estimate, kind="stable")[:k]) & set(np.argsort(truth, kind="stable")[:k]))


def figures(estimate, truth, k: int) -> tuple[float, float, int]:
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    return spearman(estimate, truth), float(np.abs(estimate - truth).mean()), worst_overlap(estimate, truth, k)


def nested_loo(rows: list[dict], dice: list[float]) -> list[float]:
    """Each val case's estimate from the whole procedure (the choice of form included) run on the others:
    an honest val figure for the chosen estimate, whose own leave-one-out error is the lowest of several."""
    return [QualityModel.fit(rows[:i] + rows[i + 1:], dice[:i] + dice[i + 1:]).predict(rows[i])
            for i in range(len(rows))]


def split_rows(estimator, split: str, progress: bool) -> list[dict]:
    """case, dice and parts of every volume of `split`, predicted as `mona predict` does."""
    predictor = estimator.predictor
    info = dataset_info(config_from_dict(predictor.config).data.root, predictor.num_classes)
    return estimator.score(load_volumes(info, split), f"scoring {split}", progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--split", default="val", help="the split to report on (val, test)")
    parser.add_argument("--refit", action="store_true", help="fit the estimate on val again, ignoring the cache")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--csv", type=Path, help="also write the split's cases (dice, quality, parts) here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    try:
        predictor = load_predictor(args.run, device=args.device)
        estimator = load_quality_estimator(predictor, args.run, progress=not args.no_progress, refit=args.refit)
        rows = estimator.val if args.split == "val" else split_rows(estimator, args.split, not args.no_progress)
    except MonaError as error:
        print(f"quality_check: error: {error}", file=sys.stderr)
        return 2
    model, val = estimator.model, estimator.val
    print(f"{args.run}: {predictor.checkpoint} (iteration {predictor.iteration})")
    print(describe(estimator))
    for name, score in (model.forms or {}).items():
        print(f"  val leave-one-out  {name:30s} MAE {score['loo_mae']:.3f}  Spearman {score['loo_spearman']:+.2f}")
    if model.forms:
        val_dice = [row["dice"] for row in val]
        nested = nested_loo(val, val_dice)  # the fit reads only the parts of each row
        rho, mae, overlap = figures(nested, val_dice, min(10, len(val) // 2))
        print(f"  val nested leave-one-out (form chosen on the other {len(val) - 1}): MAE {mae:.3f}  Spearman "
              f"{rho:+.2f}  worst-{min(10, len(val) // 2)} {overlap}")
    dice = [row["dice"] for row in rows]
    for row in rows:
        row["quality"] = model.predict(row)
    k = min(10, len(rows) // 2)
    val_dice = [row["dice"] for row in val]
    baselines = {
        "quality (this estimate)": [row["quality"] for row in rows],
        "foreground max-probability": [row["confidence"] for row in rows],
        "1 - mean entropy": [1 - row["entropy"] for row in rows],
    }
    lines = {"foreground max-probability": "confidence", "1 - mean entropy": "entropy"}
    note = " (in-sample: the fit saw these volumes)" if args.split == "val" else ""
    print(f"\n{args.split}: {len(rows)} volumes, mean Dice {np.mean(dice):.3f}{note}; worst-{k} overlap = how many "
          f"of the {k} ranked worst are among the {k} truly worst")
    print(f"  {'score':28s} Spearman    MAE  worst-{k}")
    for name, values in baselines.items():
        rho, mae, overlap = figures(values, dice, k)
        if name in lines:  # its MAE: a line fitted on val, as the issue measured it
            line = QualityModel.fit_form(name, (lines[name],), val, val_dice)
            mae = float(np.mean([abs(line.predict(row) - row["dice"]) for row in rows]))
        print(f"  {name:28s} {rho:+8.3f} {mae:6.3f}  {overlap:3d}/{k}")
    print(f"  {'val mean Dice (constant)':28s} {'':8s} {np.mean(np.abs(np.mean(val_dice) - np.array(dice))):6.3f}")
    if args.csv:
        write_csv(sorted(rows, key=lambda row: row["dice"]), args.csv, columns=None, decimals=4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
