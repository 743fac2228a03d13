"""`mona prepare folder`: a folder of scans and a folder of masks for some of them -> the SSL4MIS layout.

Scans are the `.nii.gz`/`.nii` files below IMAGES, masks those below MASKS with the same name; a
scan may carry nnU-Net's `_0000` channel suffix (`case_0000.nii.gz` matches the mask
`case.nii.gz`). A scan without a mask is an unlabeled training case, and `unlabeled` adds a
folder of more; a mask without a scan is an error. Classes: by default the distinct values found
across the masks (0, background, always first) in ascending order, named `class <value>` and
mapped to 0..K-1; with `classes` the masks hold the values 0..K-1 that those names describe, and
any other value is an error naming the file. Everything else (the split by patient, orientation,
slicing axis, normalisation, `modality` CT for an estimated HU window) is that of
`mona prepare nnunet` (`mona.data.prepare.nnunet.prepare_partly_labeled`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mona.data.prepare.common import SCAN_PATTERN, check_output, find_pairs, load_nifti, raw_folder, reading
from mona.data.prepare.nnunet import prepare_partly_labeled
from mona.errors import MonaError

MAX_CLASSES = 256  # labels are stored as uint8


def mask_values(masks: list[Path]) -> list[int]:
    """The sorted distinct values of the masks, with 0 (background); each must be a whole number >= 0."""
    values = {0}
    for path in masks:
        with reading(path):
            found = np.unique(np.asanyarray(load_nifti(path).dataobj)).astype(np.float64)
        if found.size and (found.min() < 0 or not np.array_equal(found, np.round(found))):
            raise MonaError(f"mask values must be whole numbers >= 0, found {found[:10].tolist()}", path)
        values.update(int(v) for v in found)
        if len(values) > MAX_CLASSES:
            raise MonaError(f"the masks hold more than {MAX_CLASSES} distinct values: is this a label mask?", path)
    return sorted(values)


def prepare_folder(images: Path, masks: Path, out: Path, *, classes: list[str] | None = None,
                   modality: str = "unspecified", unlabeled: Path | None = None, overwrite: bool = False,
                   **options) -> Path:
    """Prepare scans in `images` with masks for some of them in `masks` (module docstring) into
    `out`; `options` (seed, val_fraction, test_fraction, labeled, axis, hu_window, log) are those
    of `prepare_partly_labeled`."""
    images, masks = raw_folder(images), raw_folder(masks)
    if images.resolve() == masks.resolve() or images.resolve() in masks.resolve().parents:
        raise MonaError(f"the masks folder must not be inside the images folder {images}", masks)
    check_output(out, raw=masks, overwrite=overwrite)
    sources = find_pairs(images, masks, SCAN_PATTERN, SCAN_PATTERN, "NIfTI scans (.nii.gz, .nii)",
                         require_labels=False)
    if classes is None:
        values = mask_values([label for _, label in sources.values() if label is not None])
        classes = ["background"] + [f"class {value}" for value in values[1:]]
    elif len(classes) < 2:
        raise MonaError(f"--classes needs background and at least one class, got {classes}")
    else:
        values = list(range(len(classes)))
    return prepare_partly_labeled(images, out, name=Path(out).name, classes=list(classes), label_values=values,
                                  modality=modality, sources=sources, unlabeled=unlabeled, overwrite=overwrite,
                                  extra={"masks": str(masks.resolve())}, **options)
