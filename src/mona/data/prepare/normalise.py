"""Intensity normalisations to [0, 1] that `mona prepare` applies and `mona predict` repeats."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mona.errors import MonaError


def minmax(image: np.ndarray) -> np.ndarray:
    """Scale a volume to [0, 1] by its own min and max (SSL4MIS); a constant volume becomes 0."""
    return window(image, float(image.min()), float(image.max()))


def window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] (e.g. a CT HU window) and scale that range to [0, 1]."""
    if not high > low:
        return np.zeros_like(image, dtype=np.float32)
    return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)


def percentile_window(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to the volume's own `low`/`high` percentiles, then [0, 1] (robust to outliers, e.g. MRI)."""
    lo, hi = np.percentile(image, (low, high))
    return window(image, float(lo), float(hi))


def window_normalisation(low: float, high: float) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """`mona.json` description and function of a fixed intensity window (CT HU) -> [0, 1].

    The bounds are applied as written there (6 significant digits), so `mona predict`, which
    reads them back, normalises new scans exactly as the training volumes were.
    """
    low, high = float(f"{low:g}"), float(f"{high:g}")
    if not high > low:
        raise MonaError(f"an intensity window needs LO < HI, got [{low:g}, {high:g}]")
    return f"window [{low:g}, {high:g}] -> [0, 1]", lambda image: window(image, low, high)
