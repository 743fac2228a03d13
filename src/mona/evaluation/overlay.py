"""PNG montage of a segmented volume: a grid of slices with each class's contour in its colour.

Predicted contours are solid, truth contours dashed. Slices are spread evenly over those where
the prediction or the truth has any foreground (over all slices when neither has). Drawn on a
bare `matplotlib.figure.Figure` (Agg canvas), so no pyplot state or display is involved.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mona.data.io import atomic_path

PANEL_INCHES = 2.4


def pick_slices(labels: np.ndarray, truth: np.ndarray | None, count: int) -> list[int]:
    """Up to `count` slice indices spread evenly over the slices with foreground (else all)."""
    foreground = labels.reshape(len(labels), -1).any(1)
    if truth is not None:
        foreground |= truth.reshape(len(truth), -1).any(1)
    candidates = np.flatnonzero(foreground) if foreground.any() else np.arange(len(labels))
    picks = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    return [int(candidates[i]) for i in np.unique(picks)]


def write_overlay(path: str | Path, image: np.ndarray, labels: np.ndarray, num_classes: int, *,
                  truth: np.ndarray | None = None, class_names: Sequence[str] | None = None,
                  aspect: float = 1.0, title: str = "", max_slices: int = 12) -> None:
    """Write the montage of (D, H, W) `image` with `labels` (and dashed `truth`) contours to a PNG.

    `aspect` is the height / width of a pixel (the in-plane spacing ratio). Written atomically.
    """
    slices = pick_slices(labels, truth, max_slices)
    cols = math.ceil(math.sqrt(len(slices)))
    rows = math.ceil(len(slices) / cols)
    fig = Figure(figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES + 0.6), facecolor="black")
    colours = [colormaps["tab10"](c % 10) for c in range(num_classes - 1)]
    for k, index in enumerate(slices):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(image[index], cmap="gray", aspect=aspect, interpolation="nearest")
        for cls in range(1, num_classes):
            for masks, style in ((labels, "solid"), (truth, "dashed")):
                if masks is not None and (masks[index] == cls).any():
                    ax.contour((masks[index] == cls).astype(np.float32), levels=[0.5], colors=[colours[cls - 1]],
                               linewidths=1.0, linestyles=style)
        ax.set_title(f"slice {index}", color="white", fontsize=8)
        ax.set_axis_off()
    names = list(class_names or [])
    handles = [Line2D([], [], color=colours[c - 1], label=names[c] if c < len(names) else f"class {c}")
               for c in range(1, num_classes)]
    if truth is not None:
        handles.append(Line2D([], [], color="white", linestyle="dashed", label="truth"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               labelcolor="white")
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor=fig.get_facecolor())
