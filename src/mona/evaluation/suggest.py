"""Which unlabeled training cases to annotate next: those whose masks the run expects to be worst.

Each training case outside the run's labeled budget (mona.json's `unlabeled_cases`, and the volumes
of `train_slices.list` beyond the budget, their slices stacked in slice order) is segmented by the
run's best checkpoint and given its quality estimate (`mona.evaluation.quality`, fitted on val): one
network pass a case where the estimate's form reads no part of the perturbed predictions, and only the
suggested cases are then assessed in full (every part, the uncertainty map).
The ranking is by expected Dice, lowest first, with diversity: one case per patient first (patient =
the case name before its `_frameNN` suffix, or the case itself), then a second per patient, and so
on, so the first N suggestions are not N frames of one patient. Why the lowest expected Dice: a case
the model segments worst is the mask most worth checking, and uncertainty sampling adds it to the
training set. Measured on ACDC (docs/results/2026-12-08-train-on), the 4 patients it chose for a
3-patient MONA run trained on to 1.7-1.8 val Dice points less than 4 drawn at random: as published work
on semi-supervised training finds, random picks are hard to beat, and `suggest` does not beat them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from mona.config import config_from_dict
from mona.data.ssl4mis import dataset_info, patient_of, training_volumes
from mona.errors import MonaError
from mona.evaluation.case_page import case_browser, write_case_page
from mona.evaluation.predict import load_predictor
from mona.evaluation.quality import describe, load_quality_estimator, slice_arrays
from mona.evaluation.report import write_csv


def diverse_order(rows: list[dict]) -> list[dict]:
    """`rows` (each with `case` and `quality`) by rounds: each patient's worst case, lowest quality
    first, then each patient's second worst, and so on."""
    seen: dict[str, int] = {}
    ranked = []
    for row in sorted(rows, key=lambda row: row["quality"]):
        patient = patient_of(row["case"])
        seen[patient] = seen.get(patient, 0) + 1
        ranked.append((seen[patient], row["quality"], row))
    return [row for _, _, row in sorted(ranked, key=lambda item: item[:2])]


def suggest(run_dir: str | Path, out: str | Path, count: int = 10, device: str = "auto",
            progress: bool = False, say=print) -> list[dict]:
    """Rank the run's unlabeled training cases (module docstring); write the first `count` to
    OUT/suggest.csv (`rank`, `case`, `patient`, `quality` and its parts) and OUT/index.html (their
    slices, mask outlines and uncertainty); return those rows."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MonaError("the output folder is a file; choose another -o", out)
    predictor = load_predictor(run_dir, device=device)
    estimator = load_quality_estimator(predictor, run_dir, progress=progress)
    say(describe(estimator))
    config = config_from_dict(predictor.config)
    root = Path(config.data.root)
    info = dataset_info(root, predictor.num_classes)
    budget, volumes = training_volumes(root, config.data.labeled, info.metadata.get("unlabeled_cases") or ())
    candidates = [case for case in volumes if case not in budget]
    if not candidates:
        raise MonaError("no unlabeled training cases: every training case of the run's dataset is in its labeled "
                        f"budget ({config.data.labeled})", root)
    say(f"{len(candidates)} unlabeled training cases of {root} ({len(budget)} labeled in the budget)")

    def segment(case: str):
        try:
            image = np.stack(slice_arrays(root, volumes[case], info.num_classes, "image"))
        except ValueError:
            raise MonaError(f"the slices of {case} differ in shape", root / "data" / "slices") from None
        return predictor.predict_prepared(image)

    rows = [{"case": case, "quality": estimator.quality(segment(case))}
            for case in tqdm(candidates, desc="assessing", unit="case", disable=not progress, leave=False)]
    ranked, browsers = [], {}
    for rank, row in enumerate(diverse_order(rows)[:count], start=1):
        # predicted again, with every part and the uncertainty map: keeping every case's volumes would not
        # fit in memory on large sets, and the ranking needs only the parts the estimate reads
        found = segment(row["case"])
        assessment = estimator.assess(found, row["case"])
        ranked.append({"rank": rank, "patient": patient_of(row["case"]), **assessment.row})
        browsers[row["case"]] = case_browser(ranked[-1], found.image, found.labels, assessment.uncertainty,
                                             predictor.class_names)
    write_csv([{"rank": r["rank"], "case": r["case"], **r} for r in ranked], out / "suggest.csv", columns=None,
              decimals=4)
    write_case_page(out / "index.html", f"mona suggest: the {len(ranked)} cases to annotate next",
                    [f"run {run_dir}, {predictor.checkpoint} (iteration {predictor.iteration})",
                     f"ranked among {len(candidates)} unlabeled training cases, lowest expected Dice first, one case "
                     "per patient before a second"], ranked, browsers, first=("rank",))
    return ranked
