"""`mona prepare lits`: the LiTS training download -> the SSL4MIS layout.

Raw: `volume-N.nii[.gz]` with `segmentation-N.nii[.gz]` anywhere below RAW (the official
batches number them 0-130). MONA's protocol counts cases 1-131: spec case k is file N = k - 1,
so cases 1-100 (N 0-99) train and 101-131 (N 100-130) test. Validation is carved out of
training: the last ten training cases (spec 91-100, N 90-99). Training cases are listed in
ascending order, so the labeled budgets of 1, 5 and 10 cases are N 0, 0-4 and 0-9.
Volumes are reoriented to closest RAS and sliced axially; HU clipped to [-200, 250], then [0, 1].
"""

from __future__ import annotations

from pathlib import Path

from mona.data.prepare.numbered import NumberedLayout, prepare_numbered
from mona.data.prepare.reading import Log, identity_labels
from mona.errors import MonaError

CLASSES = ["background", "liver", "tumour"]
WINDOW = (-200.0, 250.0)
RANGES = {"train": range(0, 90), "val": range(90, 100), "test": range(100, 131)}


def split_lits(numbers: list[int], raw: Path) -> dict[str, list[int]]:
    """Train / val / test file numbers, ascending; a number outside 0-130 is an error."""
    outside = sorted(set(numbers) - set(range(131)))
    if outside:
        raise MonaError(f"LiTS files are numbered 0-130, found {outside[:5]}", raw)
    return {split: [n for n in sorted(numbers) if n in span] for split, span in RANGES.items()}


LAYOUT = NumberedLayout(
    "LiTS", CLASSES, identity_labels(CLASSES), [1, 5, 10], r"volume-(\d+)\.nii(?:\.gz)?",
    r"segmentation-(\d+)\.nii(?:\.gz)?", "LiTS volume-N.nii files", split_lits, lambda n: f"lits_{n:03d}",
    extra={"case_numbering": "lits_NNN is volume-NNN; spec case k is NNN = k - 1"})


def prepare_lits(raw: Path, out: Path, *, overwrite: bool = False, hu_window: tuple[float, float] = WINDOW,
                 log: Log = None) -> Path:
    """Prepare LiTS from `raw` into `out` (see the module docstring for splits and normalisation)."""
    return prepare_numbered(LAYOUT, raw, out, hu_window=hu_window, overwrite=overwrite, log=log)
