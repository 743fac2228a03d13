"""Read and write 3D volumes: SSL4MIS `.h5`, NIfTI `.nii`/`.nii.gz`, and DICOM series (read only).

Arrays are always (D, H, W) with spacing in the same axis order, as in the SSL4MIS
layout. NIfTI stores (x, y, z), so its data is transposed to (z, y, x) on reading and
back on writing; the affine and header are kept so a prediction can be written in the
space of its input. A folder holding the files of one DICOM series is read as one scan
(`read_dicom_series`): as the NIfTI image that ITK (SimpleITK, 3D Slicer, ITK-SNAP) makes of it,
so its mask is written as NIfTI in the series' geometry. Every problem with a user's file
raises `MonaError` naming it.
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

from mona.errors import LabelRangeError, MonaError

EXTENSIONS = (".nii.gz", ".nii", ".h5")
DICOM_SERIES = ""  # the `split_name` extension of a folder holding one DICOM series
# Slices of a series may be unevenly spaced by this share of their mean step (rounded positions), no more.
SLICE_STEP_TOLERANCE = 0.01

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
    """(name, extension) of a volume file, e.g. ("case01", ".nii.gz"), or (folder name, `DICOM_SERIES`)
    of a folder (a DICOM series); MonaError for other types."""
    path = Path(path)
    if path.is_dir():
        return path.name, DICOM_SERIES
    for ext in EXTENSIONS:
        if path.name.endswith(ext) and len(path.name) > len(ext):
            return path.name[: -len(ext)], ext
    if is_dicom_file(path):
        raise MonaError("a DICOM file holds one slice: give the folder that holds its series", path)
    raise MonaError(f"unsupported file type, expected one of {', '.join(EXTENSIONS)} or a folder holding one DICOM "
                    "series", path)


def case_name(path: str | Path) -> str:
    """The case a volume file holds: its name without the extension and nnU-Net's `_0000` channel
    suffix, so `case_0000.nii.gz` (a scan) and `case.nii.gz` (its mask or prediction) match."""
    name, _ = split_name(path)
    return name.removesuffix("_0000") or name


def read_volume(path: str | Path, labels_only: bool = False) -> Volume:
    """Read an `.h5` (keys `image`, `label`, attr `spacing`), a NIfTI file or a folder holding one
    DICOM series (`read_dicom_series`) into a `Volume`.

    An h5 file may hold only one of the two keys (a prediction holds only `label`).
    A NIfTI file holds one array: it becomes `image`, or `label` with `labels_only`.
    With `labels_only` an h5 file's image is not read and a missing `label` is an error.
    """
    path = Path(path)
    _, ext = split_name(path)
    if ext == DICOM_SERIES:
        return _read_nifti_image(read_dicom_series(path), path, labels_only)
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
    return _read_nifti_image(nib.load(path), path, labels_only)


def _read_nifti_image(img: nib.Nifti1Image, path: Path, labels_only: bool) -> Volume:
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
        raise LabelRangeError(f"label values must lie in 0..{num_classes - 1}, found {low}..{high}", path)


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


def is_dicom_file(path: Path) -> bool:
    """A DICOM file: `.dcm` (any case), or a file with the `DICM` marker of DICOM Part 10 at byte 128
    (exports often have no extension); a DICOMDIR index is not a slice."""
    if path.name.upper() == "DICOMDIR" or path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in `folder` (`is_dicom_file`), by name."""
    return [path for path in sorted(Path(folder).iterdir()) if is_dicom_file(path)]


def is_dicom_series(path: str | Path) -> bool:
    """Whether `path` is a folder with DICOM files directly in it (read as one series)."""
    path = Path(path)
    return path.is_dir() and any(is_dicom_file(entry) for entry in path.iterdir())


def find_dicom_series(root: Path) -> dict[str, Path]:
    """Case -> folder for every folder at or below `root` that holds DICOM files directly
    (`is_dicom_series`); the case is the folder's name (`scans/case01/` is `case01`), and two
    folders of one name are an error, as two files of one case are."""
    found: dict[str, Path] = {}
    root = Path(root)
    for folder in [root, *sorted(path for path in root.rglob("*") if path.is_dir())]:
        if any(part.startswith(".") for part in folder.relative_to(root).parts) or not is_dicom_series(folder):
            continue
        if folder.name in found:
            raise MonaError(f"case {folder.name} appears twice (also {found[folder.name]})", folder)
        found[folder.name] = folder
    return found


def read_dicom_series(folder: str | Path) -> nib.Nifti1Image:
    """The DICOM series in `folder` as an in-memory NIfTI image (float32 in the modality's units,
    `_slice_pixels`), with the geometry ITK gives a series (SimpleITK's `ImageSeriesReader`, 3D Slicer).

    Voxel (i, j, k) is column i and row j of the k-th slice along the slice normal (row cosine x
    column cosine of ImageOrientationPatient); the affine maps it to RAS millimetres (DICOM's LPS with
    x and y negated): its columns are the row cosine times the column spacing (PixelSpacing[1]), the
    column cosine times the row spacing (PixelSpacing[0]), the step between consecutive slices'
    ImagePositionPatient, and the first slice's position. A single slice steps SpacingBetweenSlices
    (else SliceThickness, else 1 mm) along the normal. Refused, naming the file: several series
    (SeriesInstanceUID) in one folder, slices of differing orientation, spacing or size, two slices at
    one position (time points, echoes), unevenly spaced slices (a missing slice), multi-frame and colour
    files, and pixel data that pydicom cannot decode (compressed, without its plug-ins).
    """
    folder = Path(folder)
    slices, affine = _dicom_slices(folder, pixels=True)
    data = np.stack([_slice_pixels(path, ds).T for path, ds in slices], axis=2)  # (columns, rows, slices)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)  # scanner coordinates, as dcm2niix and ITK write them
    img.set_sform(affine, code=1)
    return img


def dicom_affine(folder: str | Path) -> np.ndarray:
    """The affine `read_dicom_series` gives the series in `folder`, from the headers alone (no pixel data read)."""
    return _dicom_slices(Path(folder), pixels=False)[1]


def _dicom_slices(folder: Path, pixels: bool) -> tuple[list, np.ndarray]:
    """The series' (path, dataset) pairs along the slice normal and its RAS affine (`read_dicom_series`);
    without `pixels`, the datasets stop before their pixel data."""
    import pydicom  # not at the top: only DICOM input needs it
    from pydicom.errors import InvalidDicomError

    files = dicom_files(folder) if folder.is_dir() else []
    if not files:
        raise MonaError("no DICOM files (.dcm, or files marked DICM) in this folder", folder)
    slices = []
    for path in files:
        try:
            slices.append((path, pydicom.dcmread(path, stop_before_pixels=not pixels)))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise MonaError(f"cannot read as DICOM ({type(exc).__name__}: {exc})", path) from None
    _check_series(folder, slices, pixels)
    first = slices[0][1]
    cosines = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row, column = cosines[:3], cosines[3:]
    normal = np.cross(row, column)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices, positions = [slices[i] for i in order], positions[order]
    step = _slice_step(folder, slices, positions, normal)
    pixel_spacing = [float(v) for v in first.PixelSpacing]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * pixel_spacing[1], column * pixel_spacing[0]
    lps[:3, 2], lps[:3, 3] = step, positions[0]
    return slices, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _check_series(folder: Path, slices: list, pixels: bool = True) -> None:
    """One series of single-frame greyscale slices of one orientation, spacing and size (and pixel data,
    when the datasets were read with it)."""
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise MonaError(f"holds {len(series)} DICOM series (SeriesInstanceUID): put each series in a folder of its "
                        "own", folder)
    first_path, first = slices[0]
    for path, ds in slices:
        missing = [key for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                                   "Columns", *(["PixelData"] if pixels else [])) if key not in ds]
        if missing:
            raise MonaError(f"lacks {', '.join(missing)}: not a slice of a 3D scan", path)
        if int(ds.get("NumberOfFrames") or 1) > 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
            raise MonaError("multi-frame and colour DICOM files are not read: export the series as one greyscale "
                            "slice per file, or convert it to NIfTI (e.g. dcm2niix)", path)
        same = (np.allclose(np.asarray(ds.ImageOrientationPatient, float),
                            np.asarray(first.ImageOrientationPatient, float), atol=1e-4)
                and np.allclose(np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), atol=1e-4)
                and (ds.Rows, ds.Columns) == (first.Rows, first.Columns))
        if not same:
            raise MonaError(f"its orientation, pixel spacing or size differs from that of {first_path.name}: "
                            "not one 3D series", path)


def _slice_step(folder: Path, slices: list, positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The step (LPS mm) from one slice's position to the next, which must be the same for all."""
    if len(slices) == 1:
        ds = slices[0][1]
        return normal * float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    steps = np.diff(positions, axis=0)
    depth = steps @ normal
    if depth.min() < 1e-4:
        where = int(np.argmin(depth))
        raise MonaError(f"{slices[where][0].name} and {slices[where + 1][0].name} lie at one position: several "
                        "time points or echoes in one folder; put each volume in a folder of its own", folder)
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    if np.abs(steps - step).max() > SLICE_STEP_TOLERANCE * np.linalg.norm(step):
        raise MonaError(f"its slices are unevenly spaced ({depth.min():.4g} to {depth.max():.4g} mm apart): a slice "
                        "missing?", folder)
    return step


def _slice_pixels(path: Path, ds) -> np.ndarray:
    """One slice's pixels (rows, columns) as float32 in the modality's units (pydicom's modality LUT:
    RescaleSlope and RescaleIntercept, or a Modality LUT Sequence)."""
    from pydicom.pixels import apply_modality_lut

    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for pixel data it cannot decode
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = getattr(syntax, "name", "") or "its transfer syntax"
        raise MonaError(f"cannot decode the pixel data ({what}: {str(exc).splitlines()[0]}); compressed DICOM needs "
                        "pydicom's decoders (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or a "
                        "decompressed copy", path) from None
    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
