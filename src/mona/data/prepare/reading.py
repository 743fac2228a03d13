"""Reading a raw case for `mona prepare`: a NIfTI scan (or a folder holding one DICOM series,
`mona.data.io.read_dicom_series`, read as the NIfTI image ITK makes of it) and its mask, checked
against each other, turned to h5 axis order, its label values mapped to classes.

Array order: a raw volume (x, y, z) is transposed so the slicing axis comes first and the
other two follow in descending order; for axial slicing that is (z, y, x), the order
SimpleITK gives and SSL4MIS (and `mona.data.io`) use. Each case's `affine` in `mona.json`
maps h5 indices (d, h, w) to world millimetres, so `spacing` is its column norms.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mona.data.io import dicom_affine, read_dicom_series
from mona.errors import MonaError

# Image and label must share their geometry; 1e-3 (mm, or unitless for direction terms)
# absorbs float noise between qform and sform without accepting a real mismatch.
AFFINE_TOLERANCE = 1e-3
# What nibabel, gzip and h5py raise on unreadable, truncated or corrupt files.
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)
# Where a preparing step says what it did (`print`), or None to say nothing.
Log = Callable[[str], None] | None


@dataclass
class Case:
    """One prepared volume in h5 axis order (D, H, W): `image` float32 in [0, 1], `label`
    uint8 class indices (None for a scan without a mask), `affine` h5 index -> world, the raw
    NIfTI shape and file name."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    original_shape: tuple[int, ...]
    source: str

    @property
    def spacing(self) -> list[float]:
        return [float(v) for v in nib.affines.voxel_sizes(self.affine)]


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn a library's read failure into one `MonaError` naming the file."""
    try:
        yield
    except READ_ERRORS as exc:
        raise MonaError(f"cannot read ({type(exc).__name__}: {exc})", path) from None


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI header (data stays on disk), or read the DICOM series of a folder; a 4D image
    (beyond trailing size-1 axes) is refused."""
    with reading(path):
        img = read_dicom_series(path) if Path(path).is_dir() else nib.load(path)
    if len(img.shape) < 3 or any(n != 1 for n in img.shape[3:]):
        raise MonaError(f"expected a 3D volume, found shape {img.shape}", path)
    return img


def scan_affine(path: Path) -> np.ndarray:
    """A scan's affine from its header(s) alone: a NIfTI file's, or a DICOM series folder's (`load_nifti`)."""
    if not Path(path).is_dir():
        return load_nifti(path).affine
    with reading(path):
        return dicom_affine(path)


def canonical_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes along the axes of the closest-canonical (RAS) orientation of an affine."""
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = nib.affines.voxel_sizes(affine)
    return spacing


def h5_axes(axis: int) -> tuple[int, int, int]:
    """Transpose putting `axis` first and the other two in descending order: 2 -> (2, 1, 0)."""
    if axis not in (0, 1, 2):
        raise MonaError(f"slicing axis must be 0, 1 or 2, got {axis}")
    return (axis, *sorted({0, 1, 2} - {axis}, reverse=True))


def read_raw(image_path: Path, label_path: Path | None, *, canonical: bool, axis: int):
    """(image float32, raw label values or None, affine, raw shape) of a NIfTI pair, or of a scan
    without a mask (`label_path` None), in h5 axis order.

    The pair must agree in shape and affine. With `canonical` the arrays are first reoriented
    to the closest RAS orientation (`nibabel.as_closest_canonical`), else the stored voxel
    order is kept.
    """
    image_img = load_nifti(image_path)
    shape = image_img.shape[:3]
    with reading(image_path):
        image = image_img.get_fdata(dtype=np.float32).reshape(shape)
    if not np.isfinite(image).all():
        raise MonaError("image contains NaN or infinite values", image_path)
    label = None if label_path is None else read_mask(label_path, image_img, image_path)
    affine = np.asarray(image_img.affine, dtype=np.float64)
    if canonical:
        ornt = nib.orientations.io_orientation(affine)
        image = nib.orientations.apply_orientation(image, ornt)
        label = None if label is None else nib.orientations.apply_orientation(label, ornt)
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    perm = h5_axes(axis)
    h5_affine = affine.copy()
    h5_affine[:, :3] = affine[:, list(perm)]
    return (image.transpose(perm), None if label is None else label.transpose(perm), h5_affine,
            tuple(int(n) for n in shape))


def read_mask(label_path: Path, image_img: nib.Nifti1Image, image_path: Path) -> np.ndarray:
    """The raw values of a mask, which must have its scan's shape and affine."""
    label_img = load_nifti(label_path)
    shape = image_img.shape[:3]
    if label_img.shape[:3] != shape:
        raise MonaError(f"label shape {label_img.shape} differs from image shape {image_img.shape} ({image_path.name})",
                        label_path)
    if not np.allclose(label_img.affine, image_img.affine, atol=AFFINE_TOLERANCE):
        difference = np.abs(label_img.affine - image_img.affine).max()
        raise MonaError(f"label affine differs from that of {image_path.name} (by up to {difference:.4g})", label_path)
    with reading(label_path):
        return np.asanyarray(label_img.dataobj).reshape(shape)


def read_case(name: str, image_path: Path, label_path: Path | None, *, label_map: dict[int, int],
              normalise: Callable[[np.ndarray], np.ndarray], canonical: bool = True, axis: int = 2) -> Case:
    """Read a raw pair (see `read_raw`), normalise the image and map raw label values to classes."""
    image, label, affine, shape = read_raw(image_path, label_path, canonical=canonical, axis=axis)
    if label is not None:
        label = np.ascontiguousarray(map_labels(label, label_map, label_path))
    return Case(name, np.ascontiguousarray(normalise(image), dtype=np.float32), label, affine, shape, image_path.name)


def map_labels(label: np.ndarray, label_map: dict[int, int], path: Path) -> np.ndarray:
    """uint8 classes from raw label values; any value `label_map` does not declare is an error."""
    if label.dtype.kind in "ub" or (label.dtype.kind == "i" and label.min() >= 0):
        present = np.flatnonzero(np.bincount(label.ravel()))  # O(n), unlike np.unique's sort
    else:
        present = np.unique(label)
    unknown = sorted(set(present.tolist()) - set(label_map))
    if unknown:
        raise MonaError(f"label values {unknown[:10]} are not declared (expected {sorted(label_map)})", path)
    keys = np.array(sorted(label_map))
    values = np.array([label_map[k] for k in keys], dtype=np.uint8)
    return values[np.searchsorted(keys, label)]


def identity_labels(classes: list[str]) -> dict[int, int]:
    """The label map of a dataset whose raw values already are the class indices."""
    return {v: v for v in range(len(classes))}
