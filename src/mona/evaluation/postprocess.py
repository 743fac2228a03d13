"""Optional post-processing of predicted label volumes.

Keeping each class's largest 3D connected component removes islands far from the organ: they
barely change Dice but set HD95 and ASD, which measure the worst boundary errors. nnU-Net
offers the same step (chosen on validation); it is off by default here so scores stay
comparable with the paper and SSL4MIS, which report raw argmax predictions. Written on
`scipy.ndimage.label` because MONAI's `KeepLargestConnectedComponent` needs scikit-image,
a dependency mona has no other use for.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import generate_binary_structure, label


def labels_from_probabilities(probs: torch.Tensor, num_classes: int, largest_component: bool = False) -> np.ndarray:
    """The uint8 label volume of (C, D, H, W) probabilities: argmax, then, when asked, each
    class's largest connected component (`keep_largest_component`). `max(0).indices` is the argmax
    (the first maximum on ties) at a tenth of `argmax(0)`'s time on the CPU."""
    labels = probs.max(0).indices.numpy().astype(np.uint8)
    return keep_largest_component(labels, num_classes) if largest_component else labels


def keep_largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A copy of an integer label volume where each foreground class keeps only its largest
    connected component (full connectivity: voxels touching by a face, edge or corner); the
    removed voxels become background (0). Ties keep the component met first in scan order."""
    result = labels.copy()
    structure = generate_binary_structure(labels.ndim, labels.ndim)
    for cls in range(1, num_classes):
        components, count = label(labels == cls, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            result[(components > 0) & (components != 1 + int(sizes.argmax()))] = 0
    return result
