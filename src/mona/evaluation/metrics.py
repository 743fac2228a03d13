"""Per-class Dice, Jaccard, HD95 and ASD with the definitions of `medpy.metric.binary`.

medpy is unmaintained, so its definitions are reproduced on `scipy.ndimage`:

- surface of a mask: the mask XOR its erosion by the cross (connectivity 1); voxels on
  the array border are surface (the erosion's border value is 0);
- surface distances from A to B: the Euclidean distance, scaled by `spacing`, from each
  surface voxel of A to the nearest surface voxel of B;
- dice = 2|P & T| / (|P| + |T|), jaccard = |P & T| / |P | T|;
- hd95 = 95th percentile (linear interpolation) of the distances P->T and T->P pooled;
- asd = mean of the distances from the prediction P to the truth T (directed, as medpy.asd).

Without spacing, distances are in voxels (what the papers report); with spacing, in mm.

Empty masks (medpy raises on them; the papers then score 0 Dice and 0 distance, which
rewards predicting nothing):

- both empty: dice 1, jaccard 1, hd95 0, asd 0 (the structure is correctly absent);
- exactly one empty: dice 0, jaccard 0, hd95 = asd = the diagonal of the volume,
  sqrt(sum((n_i * spacing_i)^2)), longer than any distance a non-empty prediction can score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from mona.data.io import check_labels
from mona.errors import MonaError


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=generate_binary_structure(mask.ndim, 1))


def _crop_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of both masks grown by one voxel: surfaces and distances inside it are exact.

    The margin keeps every eroded neighbour (or the array border, which erosion treats
    the same), and both surfaces lie inside, so cropping only saves time on big volumes.
    """
    union = a | b
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(i for i in range(union.ndim) if i != axis)))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return tuple(box)


def binary_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Dice, Jaccard, HD95 and ASD of two boolean masks (any ndim), empty masks per the module policy."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    spacing = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (pred.ndim,) or not (spacing > 0).all():
        raise ValueError(f"spacing {tuple(spacing)} must be {pred.ndim} positive numbers")
    n_pred, n_truth = int(pred.sum()), int(truth.sum())
    if n_pred == 0 and n_truth == 0:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    if n_pred == 0 or n_truth == 0:
        diagonal = float(np.sqrt(np.sum((np.asarray(pred.shape) * spacing) ** 2)))
        return {"dice": 0.0, "jaccard": 0.0, "hd95": diagonal, "asd": diagonal}
    overlap = int(np.logical_and(pred, truth).sum())
    box = _crop_box(pred, truth)
    pred_surface, truth_surface = _surface(pred[box]), _surface(truth[box])
    pred_to_truth = distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
    truth_to_pred = distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
    return {
        "dice": 2.0 * overlap / (n_pred + n_truth),
        "jaccard": overlap / (n_pred + n_truth - overlap),
        "hd95": float(np.percentile(np.concatenate([pred_to_truth, truth_to_pred]), 95)),
        "asd": float(pred_to_truth.mean()),
    }


def score_case(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    case: str = "",
) -> list[dict]:
    """One row per foreground class 1..num_classes-1 of two label volumes.

    Row keys: case, class, dice, jaccard, hd95, asd, unit ('mm' with spacing, else
    'voxel'), pred_empty, truth_empty. Mismatched shapes or labels outside the classes
    raise MonaError naming `case`.
    """
    if pred.shape != truth.shape:
        raise MonaError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}", case or None)
    check_labels(pred, num_classes, case or None)
    check_labels(truth, num_classes, case or None)
    unit = "voxel" if spacing is None else "mm"
    rows = []
    for cls in range(1, num_classes):
        pred_mask, truth_mask = pred == cls, truth == cls
        rows.append({
            "case": case,
            "class": cls,
            **binary_metrics(pred_mask, truth_mask, spacing),
            "unit": unit,
            "pred_empty": not pred_mask.any(),
            "truth_empty": not truth_mask.any(),
        })
    return rows
