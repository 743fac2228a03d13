"""Post-processing of predicted label volumes: each class's largest connected component, per
class where validation says it helps.

Keeping a class's largest 3D connected component removes islands far from the organ: they
barely change Dice but set HD95 and ASD, which measure the worst boundary errors. It also
removes true pieces of a structure that looks split in the slices (the RV near the base), so,
as nnU-Net decides it (`determine_postprocessing`), a class is post-processed only where that
raises its mean Dice on the validation volumes (`choose_largest_component`). Training ends by
making that choice for the best checkpoint (RUN/postprocessing.json); `mona predict` applies it
by default, while `mona evaluate` scores the raw argmax unless told otherwise, so that its
scores stay comparable with the paper and SSL4MIS, which report raw predictions. Written on
`scipy.ndimage.label` because MONAI's `KeepLargestConnectedComponent` needs scikit-image,
a dependency mona has no other use for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
import torch
from scipy.ndimage import generate_binary_structure, label

from mona.evaluation.inference import dice_per_class


def labels_from_probabilities(probs: torch.Tensor, largest_component: Collection[int] = ()) -> np.ndarray:
    """The uint8 label volume of (C, D, H, W) probabilities: argmax, then, for each class in
    `largest_component`, only its largest connected component (`keep_largest_component`).
    `max(0).indices` is the argmax (the first maximum on ties) at a tenth of `argmax(0)`'s time
    on the CPU."""
    labels = probs.max(0).indices.numpy().astype(np.uint8)
    return keep_largest_component(labels, largest_component) if largest_component else labels


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """A copy of an integer label volume where each of `classes` keeps only its largest connected
    component (full connectivity: voxels touching by a face, edge or corner); the removed voxels
    become background (0). Ties keep the component met first in scan order."""
    result = labels.copy()
    structure = generate_binary_structure(labels.ndim, labels.ndim)
    for cls in classes:
        components, count = label(labels == cls, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            result[(components > 0) & (components != 1 + int(sizes.argmax()))] = 0
    return result


def choose_largest_component(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                             num_classes: int) -> dict:
    """nnU-Net's rule on validation volumes: a foreground class keeps only its largest component
    when that raises its mean Dice over `predictions` (raw argmax label volumes) against `truths`.

    Returns {"largest_component": [the chosen classes], "val_dice": {class: [raw, with only the
    largest component]}}, the form of RUN/postprocessing.json.
    """
    foreground = range(1, num_classes)
    raw = np.mean([dice_per_class(p, t, num_classes) for p, t in zip(predictions, truths)], axis=0)
    kept = np.mean([dice_per_class(keep_largest_component(p, foreground), t, num_classes)
                    for p, t in zip(predictions, truths)], axis=0)
    return {"largest_component": [c for c in foreground if kept[c - 1] > raw[c - 1]],
            "val_dice": {str(c): [float(raw[c - 1]), float(kept[c - 1])] for c in foreground}}
