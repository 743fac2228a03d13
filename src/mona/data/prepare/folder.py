"""`mona prepare folder`: a folder of scans and a folder of masks for some of them -> the SSL4MIS layout.

Scans are the `.nii.gz`/`.nii` files below IMAGES, and the folders below it that hold the files of
one DICOM series (`IMAGES/case01/*.dcm`, or deeper, is the scan `case01`); masks are the NIfTI
files below MASKS with the scan's name. A scan may carry nnU-Net's `_0000`
channel suffix (`case_0000.nii.gz` matches the mask `case.nii.gz`); a DICOM series' mask is a
NIfTI in the series' geometry (`mona.data.io.read_dicom_series`, as ITK-based tools save it). A
scan without a mask is an unlabeled training case, and `unlabeled` adds a folder of more; a mask
without a scan is an error. Classes: by default the distinct values found across the masks (0,
background, always first) in ascending order, named `class <value>` and mapped to 0..K-1; with
`classes` the masks hold the values 0..K-1 that those names describe, and any other value is an
error naming the file. A value that only one of several masks holds (a stray 0/255 mask among 0..3
ones) is warned about, naming the mask; files that are not scans or masks (`notes.txt`, a
DICOMDIR) are listed as skipped. Everything else (the split by patient, orientation, slicing axis,
normalisation, `modality` CT for an estimated HU window) is that of `mona prepare nnunet`
(`mona.data.prepare.nnunet.prepare_partly_labeled`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mona.data.prepare.finding import SCAN_PATTERN, SCANS, find_pairs, log_skipped, raw_folder
from mona.data.prepare.nnunet import prepare_partly_labeled
from mona.data.prepare.reading import Log, load_nifti, reading
from mona.data.prepare.writing import check_output
from mona.errors import MonaError

MAX_CLASSES = 256  # labels are stored as uint8


def mask_values(masks: list[Path], log: Log = None) -> list[int]:
    """The sorted distinct values of the masks, with 0 (background); each must be a whole number >= 0.
    A value that only one of several masks holds is logged as a warning naming that mask (`odd_values`)."""
    values, held = {0}, {}
    for path in masks:
        with reading(path):
            found = np.unique(np.asanyarray(load_nifti(path).dataobj)).astype(np.float64)
        if found.size and (found.min() < 0 or not np.array_equal(found, np.round(found))):
            raise MonaError(f"mask values must be whole numbers >= 0, found {found[:10].tolist()}", path)
        held[path] = {int(v) for v in found} - {0}
        values.update(held[path])
        if len(values) > MAX_CLASSES:
            raise MonaError(f"the masks hold more than {MAX_CLASSES} distinct values: is this a label mask?", path)
    for line in odd_values(held):
        if log:
            log(line)
    return sorted(values)


def odd_values(held: dict[Path, set[int]]) -> list[str]:
    """Warnings for the masks holding a value no other mask holds: the masks disagree on their label set
    (a 0/255 mask among 0..3 ones), and that value would silently become a class of its own."""
    lines = []
    for path, values in held.items():
        others = set().union(*(v for p, v in held.items() if p != path))
        odd = sorted(values - others)
        if len(held) > 1 and odd:
            lines.append(f"warning: {path}: no other mask holds the value(s) {odd} (the others hold "
                         f"{sorted(others) or 'background only'}); they become class(es) "
                         f"{', '.join(f'class {v}' for v in odd)}: check this mask, or give --classes")
    return lines


def prepare_folder(images: Path, masks: Path, out: Path, *, classes: list[str] | None = None,
                   modality: str = "unspecified", unlabeled: Path | None = None, overwrite: bool = False,
                   log: Log = None, **options) -> Path:
    """Prepare scans in `images` with masks for some of them in `masks` (module docstring) into
    `out`; `log` gets prepare's lines, and `options` (seed, val_fraction, test_fraction, labeled, axis,
    hu_window) are those of `prepare_partly_labeled`."""
    images, masks = raw_folder(images), raw_folder(masks)
    if images.resolve() == masks.resolve() or images.resolve() in masks.resolve().parents:
        raise MonaError(f"the masks folder must not be inside the images folder {images}", masks)
    check_output(out, raw=masks, overwrite=overwrite)
    sources = find_pairs(images, masks, SCAN_PATTERN, SCAN_PATTERN, SCANS, require_labels=False, dicom_series=True)
    labels = [label for _, label in sources.values() if label is not None]
    if not labels:
        raise MonaError("no masks found: each is a .nii.gz or .nii file named as its scan (case.nii.gz for "
                        "case.nii.gz, case_0000.nii.gz or a DICOM series folder case/)", masks)
    log_skipped(images, [image for image, _ in sources.values()], SCANS, log)
    log_skipped(masks, labels, "masks of the scans (.nii.gz, .nii)", log)
    if classes is None:
        values = mask_values(labels, log)
        classes = ["background"] + [f"class {value}" for value in values[1:]]
    elif len(classes) < 2:
        raise MonaError(f"--classes needs background and at least one class, got {classes}")
    else:
        values = list(range(len(classes)))
    return prepare_partly_labeled(images, out, name=Path(out).name, classes=list(classes), label_values=values,
                                  modality=modality, sources=sources, unlabeled=unlabeled, overwrite=overwrite,
                                  extra={"masks": str(masks.resolve())}, log=log, **options)
