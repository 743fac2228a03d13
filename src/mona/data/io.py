"""Read and write 3D volumes: SSL4MIS `.h5` and NIfTI `.nii`/`.nii.gz`.

Arrays are always (D, H, W) with spacing in the same axis order, as in the SSL4MIS
layout. NIfTI stores (x, y, z), so its data is transposed to (z, y, x) on reading and
back on writing; the affine and header are kept so a prediction can be written in the
space of its input. Every problem with a user's file raises `MonaError` naming it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mona.errors import MonaError

EXTENSIONS = (".nii.gz", ".nii", ".h5")

# What h5py and nibabel raise on unreadable, truncated or corrupt files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)


@dataclass
class Volume:
    """One volume: `image` float32 and/or `label` uint8, both (D, H, W).

    `spacing` is in array-axis order (D, H, W) or None when the file does not say;
    `affine` (4x4, NIfTI voxel (x, y, z) -> world) and `header` (nibabel) are kept
    only for NIfTI, so `write_label_volume` can reproduce the input's geometry.
    """

    image: np.ndarray | None = None
    label: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    header: object | None = None

    @property
    def shape(self) -> tuple[int, ...] | None:
        array = self.image if self.image is not None else self.label
        return None if array is None else array.shape


def split_name(path: str | Path) -> tuple[str, str]:
    """(name, extension) of a volume file, e.g. ("case01", ".nii.gz"); MonaError for other types."""
    filename = Path(path).name
    for ext in EXTENSIONS:
        if filename.endswith(ext) and len(filename) > len(ext):
            return filename[: -len(ext)], ext
    raise MonaError(f"unsupported file type, expected one of {', '.join(EXTENSIONS)}", path)


def case_name(path: str | Path) -> str:
    """The case a volume file holds: its name without the extension and nnU-Net's `_0000` channel
    suffix, so `case_0000.nii.gz` (a scan) and `case.nii.gz` (its mask or prediction) match."""
    name, _ = split_name(path)
    return name.removesuffix("_0000") or name


def read_volume(path: str | Path, labels_only: bool = False) -> Volume:
    """Read an `.h5` (keys `image`, `label`, attr `spacing`) or NIfTI file into a `Volume`.

    An h5 file may hold only one of the two keys (a prediction holds only `label`).
    A NIfTI file holds one array: it becomes `image`, or `label` with `labels_only`.
    With `labels_only` an h5 file's image is not read and a missing `label` is an error.
    """
    path = Path(path)
    _, ext = split_name(path)
    if not path.is_file():
        raise MonaError("file not found", path)
    try:
        return _read_h5(path, labels_only) if ext == ".h5" else _read_nifti(path, labels_only)
    except _READ_ERRORS as exc:
        raise MonaError(f"cannot read ({type(exc).__name__}: {exc})", path) from exc


def _read_h5(path: Path, labels_only: bool) -> Volume:
    with h5py.File(path, "r") as f:
        if labels_only and "label" not in f:
            raise MonaError("missing key 'label'", path)
        if "image" not in f and "label" not in f:
            raise MonaError("missing keys: holds neither 'image' nor 'label'", path)
        image = None if labels_only or "image" not in f else _as_image(f["image"][()], path)
        label = _as_labels(f["label"][()], path) if "label" in f else None
        spacing = _as_spacing(f.attrs["spacing"], path) if "spacing" in f.attrs else None
    if image is not None and label is not None and image.shape != label.shape:
        raise MonaError(f"image shape {image.shape} differs from label shape {label.shape}", path)
    return Volume(image=image, label=label, spacing=spacing)


def _read_nifti(path: Path, labels_only: bool) -> Volume:
    """A 3D NIfTI; trailing axes of size 1 (x, y, z, 1), which `mona prepare` accepts too, are dropped."""
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    _check_3d(data, "volume", path)
    data = np.transpose(data, (2, 1, 0))
    spacing = _as_spacing(img.header.get_zooms()[:3][::-1], path)
    return Volume(
        image=None if labels_only else _as_image(data, path),
        label=_as_labels(data, path) if labels_only else None,
        spacing=spacing,
        affine=np.asarray(img.affine, dtype=np.float64),
        header=img.header,
    )


def _check_3d(array: np.ndarray, what: str, path: Path) -> None:
    if array.ndim != 3:
        raise MonaError(f"expected a 3D {what}, found {array.ndim}D with shape {array.shape}", path)


def _as_image(array: np.ndarray, path: Path) -> np.ndarray:
    _check_3d(array, "image", path)
    image = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(image).all():
        raise MonaError("image contains NaN or infinite values", path)
    return image


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 labels; float files are accepted when every value is a whole number in 0..255."""
    _check_3d(array, "label volume", path)
    if array.size and not np.issubdtype(array.dtype, np.bool_):
        whole = np.issubdtype(array.dtype, np.integer) or (
            np.isfinite(array).all() and (array == np.round(array)).all())
        if not whole:
            raise MonaError("label values must be whole numbers", path)
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise MonaError(f"label values must lie in 0..255, found {low}..{high}", path)
    return np.ascontiguousarray(array, dtype=np.uint8)


def _as_spacing(values, path: Path) -> tuple[float, float, float]:
    spacing = tuple(float(v) for v in np.ravel(values))
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MonaError(f"spacing must be 3 positive numbers, found {spacing}", path)
    return spacing


def check_labels(labels: np.ndarray, num_classes: int, path: str | Path | None) -> None:
    """MonaError unless every label lies in 0..num_classes-1 (a wrong --num-classes or a wrong file)."""
    if labels.size == 0:
        return
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise MonaError(f"label values must lie in 0..{num_classes - 1}, found {low}..{high}", path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same extension) and rename it onto `path` on success.

    A reader never sees a half-written file, and an interrupted write leaves the old one.
    """
    path = Path(path)
    ext = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{ext}")
    if path.is_dir():
        raise MonaError("cannot write: a folder has this name", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MonaError(f"cannot write: {_file_in_path(path.parent)} is a file, not a folder", path) from None
    except OSError as exc:
        raise MonaError(f"cannot write ({exc.strerror or exc})", path) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise MonaError(f"cannot write ({exc.strerror or exc})", path) from None
    finally:
        with contextlib.suppress(OSError):  # a failed clean-up must not hide the error above
            tmp.unlink(missing_ok=True)


def _file_in_path(folder: Path) -> Path:
    """The first part of `folder` that exists as a file (why a mkdir of it fails)."""
    for part in reversed([folder, *folder.parents]):
        if part.exists() and not part.is_dir():
            return part
    return folder


def write_label_volume(path: str | Path, labels: np.ndarray, reference: Volume | None = None) -> None:
    """Write (D, H, W) labels as uint8 to `.h5` (key `label`) or NIfTI, atomically.

    NIfTI takes the reference's affine and header (so it overlays its input); without
    them the affine is diagonal in the reference's spacing, or the identity.
    An h5 file gets the reference's spacing as attr `spacing`.
    """
    _, ext = split_name(path)
    labels = np.asarray(labels)
    if reference is not None and reference.shape is not None and reference.shape != labels.shape:
        raise MonaError(f"labels of shape {labels.shape} do not match the reference shape {reference.shape}", path)
    labels = _as_labels(labels, Path(path))
    spacing = None if reference is None else reference.spacing
    with atomic_path(path) as tmp:
        if ext == ".h5":
            with h5py.File(tmp, "w") as f:
                f.create_dataset("label", data=labels, compression="gzip")
                if spacing is not None:
                    f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
        else:
            nib.save(_nifti_image(labels, reference), tmp)


def _nifti_image(labels: np.ndarray, reference: Volume | None) -> nib.Nifti1Image:
    affine = None if reference is None else reference.affine
    header = None if reference is None else reference.header
    if affine is None:
        zooms = (1.0, 1.0, 1.0) if reference is None or reference.spacing is None else reference.spacing[::-1]
        affine = np.diag([*zooms, 1.0])
    img = nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), affine, header=header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    return img
