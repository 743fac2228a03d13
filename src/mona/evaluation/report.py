"""Evaluation reports: per-case rows to CSV, a per-class summary to JSON and a table.

Averages follow the papers: over cases per class (mean and population std), then the
mean over classes of those per-class means. `compare_folders` scores a folder of
predicted label volumes against a folder of truths, matched by file name.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mona.data.io import EXTENSIONS, atomic_path, case_name, check_labels, read_volume
from mona.data.prepare.reading import map_labels
from mona.errors import MonaError
from mona.evaluation.metrics import score_case

METRICS = ("dice", "jaccard", "hd95", "asd")
COLUMNS = ("case", "class", *METRICS, "unit", "pred_empty", "truth_empty")


def summarize(rows: Sequence[dict], class_names: Sequence[str] | None = None) -> dict:
    """Per-class mean and std over cases of each metric, and their mean over classes.

    `class_names` is indexed by class (background first, as `classes` in mona.json).
    `empty_predictions` counts rows whose prediction is empty where the truth is not
    (scored by the empty policy of `mona.evaluation.metrics`).
    """
    if not rows:
        raise MonaError("no cases to summarize")
    units = sorted({row["unit"] for row in rows})
    if len(units) > 1:
        raise MonaError(f"cases mix distance units {units}: give every truth volume a spacing, or none")
    classes = []
    for cls in sorted({row["class"] for row in rows}):
        selected = [row for row in rows if row["class"] == cls]
        entry = {
            "class": cls,
            "name": class_names[cls] if class_names is not None and cls < len(class_names) else f"class {cls}",
            "cases": len(selected),
            "empty_predictions": sum(row["pred_empty"] and not row["truth_empty"] for row in selected),
            "empty_truths": sum(row["truth_empty"] for row in selected),
        }
        for metric in METRICS:
            values = np.array([row[metric] for row in selected], dtype=np.float64)
            entry[metric] = {"mean": float(values.mean()), "std": float(values.std())}
        classes.append(entry)
    return {
        "unit": units[0],
        "cases": len({row["case"] for row in rows}),
        "classes": classes,
        "mean": {metric: float(np.mean([c[metric]["mean"] for c in classes])) for metric in METRICS},
        "empty_predictions": sum(c["empty_predictions"] for c in classes),
    }


def write_csv(rows: Sequence[dict], path: str | Path, columns: Sequence[str] | None = COLUMNS,
              decimals: int | None = None) -> None:
    """Rows as CSV, written atomically: by default the metrics' rows (one line per case and class,
    columns `COLUMNS`); `columns=None` takes every key in order of first appearance, `decimals`
    rounds floats for reading (the quality estimate's and suggest's tables)."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) if columns is None else list(columns)

    def cell(value):
        return f"{value:.{decimals}f}" if decimals is not None and isinstance(value, float) else value

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: cell(row.get(key, "")) for key in columns} for row in rows)


def write_json(summary: dict, path: str | Path) -> None:
    """The summary as indented JSON; written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def format_table(summary: dict) -> str:
    """Fixed-width table: one row per class and the mean; cells are mean (std) over cases.

    Dice and Jaccard are percentages with one decimal, distances in the summary's unit.
    """
    unit = summary["unit"]
    headers = ("Dice %", "Jaccard %", f"HD95 {unit}", f"ASD {unit}")
    columns = tuple(zip(METRICS, (100.0, 100.0, 1.0, 1.0), (1, 1, 2, 2)))  # metric, scale, decimals
    name_width = max(len("class"), *(len(c["name"]) for c in summary["classes"]))
    lines = [f"{'class':<{name_width}}" + "".join(f"{h:>16}" for h in headers)]
    for c in summary["classes"]:
        cells = (f"{c[m]['mean'] * s:.{d}f} ({c[m]['std'] * s:.{d}f})" for m, s, d in columns)
        lines.append(f"{c['name']:<{name_width}}" + "".join(f"{cell:>16}" for cell in cells))
    means = (f"{summary['mean'][m] * s:.{d}f}" for m, s, d in columns)
    lines.append(f"{'mean':<{name_width}}" + "".join(f"{cell:>16}" for cell in means))
    lines.append(
        f"mean (std) over {summary['cases']} cases; empty predictions of a present structure: "
        f"{summary['empty_predictions']} (scored Dice 0, distance = volume diagonal)"
    )
    return "\n".join(lines)


def volumes_by_name(folder: Path) -> dict[str, Path]:
    """FOLDER's volume files by `case_name`; two files of one case are an error."""
    if not folder.is_dir():
        raise MonaError("folder not found", folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.endswith(EXTENSIONS):
            continue  # hidden names include half-written temporary files
        name = case_name(path)
        if name in found:
            raise MonaError(f"two volumes named {name!r}: {found[name].name} and {path.name}", folder)
        found[name] = path
    return found


def compare_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    num_classes: int,
    spacing_from: str = "truth",
    label_values: list[int] | None = None,
) -> tuple[list[dict], dict]:
    """Score every truth volume against the prediction of the same name (formats may differ).

    `label_values` are the values the masks hold for classes 0, 1, ... (e.g. [0, 255]), when they
    are not the class indices; a value outside them is an error naming the file.

    Extensions (.nii.gz, .nii, .h5) are ignored in matching; a truth without a
    prediction is an error, extra predictions are ignored. Distances use the spacing
    of the truth ('truth'), of the prediction ('pred') or none ('none': voxels);
    a volume whose file gives no spacing is scored in voxels.
    """
    if spacing_from not in ("truth", "pred", "none"):
        raise ValueError(f"spacing_from must be 'truth', 'pred' or 'none', not {spacing_from!r}")
    truths = volumes_by_name(Path(truth_dir))
    preds = volumes_by_name(Path(pred_dir))
    if not truths:
        raise MonaError(f"no volumes ({', '.join(EXTENSIONS)}) found", truth_dir)
    rows: list[dict] = []
    for name, truth_path in truths.items():
        if name not in preds:
            raise MonaError(f"no prediction named {name!r} in {pred_dir}", truth_path)
        pred_path = preds[name]
        truth, pred = read_volume(truth_path, labels_only=True), read_volume(pred_path, labels_only=True)
        if label_values is not None:
            classes = {value: index for index, value in enumerate(label_values)}
            truth.label, pred.label = map_labels(truth.label, classes, truth_path), map_labels(pred.label, classes,
                                                                                                 pred_path)
        check_labels(truth.label, num_classes, truth_path)
        check_labels(pred.label, num_classes, pred_path)
        if pred.label.shape != truth.label.shape:
            raise MonaError(f"shape {pred.label.shape} differs from the truth's {truth.label.shape}", pred_path)
        spacing = {"truth": truth.spacing, "pred": pred.spacing, "none": None}[spacing_from]
        rows += score_case(pred.label, truth.label, num_classes, spacing, case=name)
    return rows, summarize(rows)
