"""What every `mona prepare` dataset shares: reading raw NIfTI pairs (or scans without a mask),
normalising, and writing the SSL4MIS layout (with `mona.json`) into place only once it is complete.
A scan may also be a folder holding one DICOM series (`mona.data.io.read_dicom_series`), read as
the NIfTI image ITK makes of it; its mask is a NIfTI file in that geometry.

Array order: a raw volume (x, y, z) is transposed so the slicing axis comes first and the
other two follow in descending order; for axial slicing that is (z, y, x), the order
SimpleITK gives and SSL4MIS (and `mona.data.io`) use. Each case's `affine` in `mona.json`
maps h5 indices (d, h, w) to world millimetres, so `spacing` is its column norms.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import h5py
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from mona.data.io import dicom_affine, dicom_files, find_dicom_series, read_dicom_series
from mona.data.ssl4mis import patient_of, volume_of
from mona.errors import MonaError

SPLITS = ("train", "val", "test")
# A scan file name: the case, nnU-Net's optional `_0000` channel suffix, a NIfTI ending.
SCAN_PATTERN = r"(.+?)(?:_0000)?\.nii(?:\.gz)?"
SCANS = "scans (.nii.gz, .nii, or a folder holding one DICOM series)"
# Image and label must share their geometry; 1e-3 (mm, or unitless for direction terms)
# absorbs float noise between qform and sform without accepting a real mismatch.
AFFINE_TOLERANCE = 1e-3
# What nibabel, gzip and h5py raise on unreadable, truncated or corrupt files.
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)

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


@dataclass
class DatasetMeta:
    """How a dataset is read (`canonical` orientation or stored voxel order, `slicing_axis` of
    that array, `normalise`, `label_map` raw value -> class) and what `mona.json` says of it:
    `normalisation` describes `normalise`, `split_source` where the splits come from, `extra`
    holds dataset-specific keys."""

    name: str
    classes: list[str]
    modality: str
    normalisation: str
    normalise: Callable[[np.ndarray], np.ndarray]
    label_map: dict[int, int]
    budgets: list[int]
    slicing_axis: int = 2
    canonical: bool = True
    split_source: str = ""
    extra: dict = field(default_factory=dict)


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


def raw_folder(path: str | Path) -> Path:
    """The raw dataset folder, which must exist."""
    path = Path(path)
    if not path.is_dir():
        raise MonaError("raw dataset folder does not exist", path)
    return path


def find_files(root: Path, pattern: str) -> dict[str, Path]:
    """Case key -> file for the NIfTI files below `root` whose names match `pattern` (group 1 = the key)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*.nii*")):
        match = re.fullmatch(pattern, path.name)
        if match:
            if match.group(1) in found:
                raise MonaError(f"case {match.group(1)} appears twice (also {found[match.group(1)]})", path)
            found[match.group(1)] = path
    return found


def find_scan_files(root: Path) -> dict[str, Path]:
    """Case -> scan below `root`: NIfTI files (`SCAN_PATTERN`) and folders holding one DICOM series
    (`find_dicom_series`: a folder `case01/` is the case `case01`)."""
    scans = find_files(root, SCAN_PATTERN)
    for case, folder in find_dicom_series(root).items():
        if case in scans:
            raise MonaError(f"case {case} appears twice (also {scans[case]})", folder)
        scans[case] = folder
    return scans


def find_pairs(image_root: Path, label_root: Path, image_pattern: str, label_pattern: str,
               what: str, *, require_labels: bool = True,
               dicom_series: bool = False) -> dict[str, tuple[Path, Path | None]]:
    """Case key -> (image, label) for the files below `image_root` and `label_root` whose names
    match the two regexes (group 1 = the key); with `dicom_series`, images are scan files and DICOM
    series folders (`find_scan_files`). A label without image is an error; so is an image without
    label, unless `require_labels` is off: its label is then None (an unlabeled case)."""
    images = find_scan_files(image_root) if dicom_series else find_files(image_root, image_pattern)
    labels = find_files(label_root, label_pattern)
    if not images and not labels:
        raise MonaError(f"no {what} found (empty dataset)", image_root)
    for key, path in images.items():
        if require_labels and key not in labels:
            raise MonaError("image has no label file", path)
    for key, path in labels.items():
        if key not in images:
            raise MonaError("label has no image file", path)
    return {key: (path, labels.get(key)) for key, path in images.items()}


def skipped_files(root: Path, used: list[Path]) -> list[Path]:
    """The files below `root` that prepare does not read (`used` are those it does, a DICOM series'
    folder its DICOM files); hidden ones aside."""
    used_set = {Path(path).resolve() for path in used}
    used_set |= {path.resolve() for folder in used if Path(folder).is_dir() for path in dicom_files(folder)}
    return [path for path in sorted(Path(root).rglob("*")) if path.is_file() and not path.name.startswith(".")
            and path.resolve() not in used_set]


def log_skipped(root: Path, used: list[Path], what: str, log: Log) -> None:
    """Say which files below `root` are not read as `what` (a notes file, a DICOM series): none is silently left out."""
    skipped = skipped_files(root, used)
    if log and skipped:
        names = ", ".join(str(path.relative_to(root)) for path in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        log(f"note: skipped {len(skipped)} file(s) in {root} that are not {what}: {names}{more}")


def find_scans(folder: Path) -> dict[str, tuple[Path, None]]:
    """Case -> (scan, no label) for every scan below `folder` (`find_scan_files`)."""
    folder = raw_folder(folder)
    scans = find_scan_files(folder)
    if not scans:
        raise MonaError(f"no {SCANS} found", folder)
    return {name: (path, None) for name, path in scans.items()}


def window_normalisation(low: float, high: float) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """`mona.json` description and function of a fixed intensity window (CT HU) -> [0, 1].

    The bounds are applied as written there (6 significant digits), so `mona predict`, which
    reads them back, normalises new scans exactly as the training volumes were.
    """
    low, high = float(f"{low:g}"), float(f"{high:g}")
    if not high > low:
        raise MonaError(f"an intensity window needs LO < HI, got [{low:g}, {high:g}]")
    return f"window [{low:g}, {high:g}] -> [0, 1]", lambda image: window(image, low, high)


def derive_volumes(slice_names: list[str]) -> list[str]:
    """Volumes of a slice list in order of first appearance (`train.list` from `train_slices.list`)."""
    return list(dict.fromkeys(volume_of(n) for n in slice_names))


def identity_labels(classes: list[str]) -> dict[int, int]:
    """The label map of a dataset whose raw values already are the class indices."""
    return {v: v for v in range(len(classes))}


def split_cases(cases: list[str], seed: int, val_fraction: float, test_fraction: float,
                source: Path | None = None) -> dict[str, list[str]]:
    """Seeded split of labeled cases by patient (`patient_of`), so a patient's cases stay together.

    The sorted patients are shuffled; test then val take round(fraction * patients), val at
    least one and test at least one when its fraction is positive, as long as one patient is
    left to train (test gives way first: with few masks it may be empty). Train keeps the
    shuffled order, so the labeled budget of N patients is a seeded draw; val and test are sorted.
    """
    for name, fraction in (("validation", val_fraction), ("test", test_fraction)):
        if not 0 <= fraction < 1:
            raise MonaError(f"the {name} fraction must lie in [0, 1), got {fraction}")
    groups: dict[str, list[str]] = {}
    for case in sorted(cases):
        groups.setdefault(patient_of(case), []).append(case)
    if len(groups) < 2:
        raise MonaError(f"found {len(cases)} labeled case(s) of {len(groups)} patient(s): at least two masks are "
                        "needed, one to train and one to validate", source)
    patients = sorted(groups)
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n_val = min(max(1, round(val_fraction * len(order))), len(order) - 1)
    n_test = min(0 if test_fraction == 0 else max(1, round(test_fraction * len(order))), len(order) - 1 - n_val)

    def cases_of(chosen: list[str]) -> list[str]:
        return [case for patient in chosen for case in groups[patient]]

    return {"train": cases_of(order[n_test + n_val:]), "val": sorted(cases_of(order[n_test:n_test + n_val])),
            "test": sorted(cases_of(order[:n_test]))}


def split_summary(splits: dict[str, list[str]], split_source: str) -> list[str]:
    """What `mona prepare` prints of a split (and records in `mona.json`)."""
    labeled = sum(len(splits[split]) for split in SPLITS)
    unlabeled = splits.get("unlabeled", [])
    return [f"labeled cases: {labeled} (train {len(splits['train'])}, val {len(splits['val'])}, "
            f"test {len(splits['test'])}); unlabeled cases: {len(unlabeled)} (training only)",
            f"val: {' '.join(splits['val'])}",
            f"test: {' '.join(splits['test']) or 'none'}",
            f"split: {split_source}"]


def write_dataset(out: Path, meta: DatasetMeta, splits: dict[str, list[str]],
                  sources: dict[str, tuple[Path, Path | None]], *, raw: Path, overwrite: bool = False,
                  train_slices: list[str] | None = None, log: Log = None) -> Path:
    """Read every case of `splits` from its (image, label) `sources`, one at a time, and write
    the SSL4MIS layout in `out`.

    `splits` names the labeled "train", "val" (both non-empty) and "test" (may be empty: then
    no `test.list` is written) cases and, optionally, "unlabeled" training cases, whose label
    source is None. Every case gets a volume `data/<case>.h5` (attrs `spacing`, `affine`;
    unlabeled: `image` only); training cases also get 2D slices `data/slices/<case>_slice_<i>.h5`,
    numbered from 1 as in the prepared ACDC copy. `train_slices` (ACDC's canonical order) must
    name exactly the written slices; without it slices are listed case by case, labeled
    `splits["train"]` first in its order (the first N patients are the labeled budget), then the
    unlabeled cases. `train.list` names the training volumes in that order.
    """
    splits = {"unlabeled": [], **splits}
    for split in ("train", "val"):
        if not splits.get(split):
            raise MonaError(f"no {split} cases: the {meta.name} split needs at least one", raw)
    names = [n for split in (*SPLITS, "unlabeled") for n in splits[split]]
    if len(set(names)) != len(names):
        raise MonaError("a case appears in more than one split (or twice in one)", raw)
    training = set(splits["train"]) | set(splits["unlabeled"])
    with staged_folder(Path(out), raw=Path(raw), overwrite=overwrite) as tmp:
        (tmp / "data" / "slices").mkdir(parents=True)
        written: list[str] = []
        cases = {}
        for k, name in enumerate(names, 1):
            if log:
                log(f"[{k}/{len(names)}] {name}")
            case = read_case(name, *sources[name], label_map=meta.label_map, normalise=meta.normalise,
                             canonical=meta.canonical, axis=meta.slicing_axis)
            attrs = {"spacing": case.spacing, "affine": case.affine}
            _write_h5(tmp / "data" / f"{name}.h5", case.image, case.label, attrs)
            if name in training:
                for i in range(case.image.shape[0]):
                    written.append(f"{name}_slice_{i + 1}")
                    _write_h5(tmp / "data" / "slices" / f"{written[-1]}.h5", case.image[i],
                              None if case.label is None else case.label[i])
            cases[name] = {"spacing": case.spacing, "affine": case.affine.tolist(),
                           "original_shape": list(case.original_shape), "source": case.source}
        if train_slices is None:
            train_slices = written
        elif set(train_slices) != set(written):
            missing = sorted(set(train_slices) - set(written))
            extra = sorted(set(written) - set(train_slices))
            raise MonaError(f"train_slices.list does not match the training volumes: listed but absent {missing[:5]}, "
                            f"present but unlisted {extra[:5]}", raw)
        lists = {"train_slices": train_slices, "train": derive_volumes(train_slices),
                 "val": splits["val"], "test": splits["test"]}
        for stem, lines in lists.items():
            if lines:
                (tmp / f"{stem}.list").write_text("".join(f"{line}\n" for line in lines))
        document = {"name": meta.name, "classes": meta.classes, "num_classes": len(meta.classes),
                    "modality": meta.modality, "normalisation": meta.normalisation,
                    "slicing_axis": meta.slicing_axis, "budgets": meta.budgets,
                    "orientation": "RAS (nibabel.as_closest_canonical)" if meta.canonical else "stored voxel order",
                    **meta.extra, "source": str(Path(raw).resolve()),
                    "labeled_cases": sorted(n for split in SPLITS for n in splits[split]),
                    "unlabeled_cases": splits["unlabeled"],
                    "splits": {split: splits[split] for split in SPLITS}, "split_source": meta.split_source,
                    "cases": cases}
        (tmp / "mona.json").write_text(json.dumps(document, indent=1))
    if log:  # only now: a prepare stopped by a bad file made no split
        for line in split_summary(splits, meta.split_source):
            log(line)
    return Path(out)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray | None, attrs: dict | None = None) -> None:
    """gzip level 1: about twice as fast as h5py's default level 4 for ~10 % more disk (large CT sets).
    A scan without a mask gets no `label` dataset."""
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip", compression_opts=1)
        if label is not None:
            f.create_dataset("label", data=label, compression="gzip", compression_opts=1)
        for key, value in (attrs or {}).items():
            f.attrs[key] = np.asarray(value, dtype=np.float64)


def check_output(out: Path, *, raw: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` without `overwrite`, and any `out` that is (or contains) the raw data."""
    out = Path(out)
    resolved, raw_resolved = out.resolve(), Path(raw).resolve()
    if resolved == raw_resolved or resolved in raw_resolved.parents:
        raise MonaError(f"the output folder would replace the raw data in {raw}", out)
    if out.exists() and not out.is_dir():
        raise MonaError("output exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MonaError("output folder exists and is not empty (pass --overwrite to replace it)", out)


@contextmanager
def staged_folder(out: Path, *, raw: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling of `out` to build in (after `check_output`); on success it replaces
    `out`, on failure it is removed, so `out` is always either complete or as it was."""
    check_output(out, raw=raw, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old.exists():
                os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class NumberedLayout:
    """A raw layout of CT image/label files numbered by case (LiTS, MM-WHS): file name regexes
    (group 1 = number), the paper's split of the numbers, and the case name of a number."""

    name: str
    classes: list[str]
    label_map: dict[int, int]
    budgets: list[int]
    image_pattern: str
    label_pattern: str
    what: str
    split: Callable[[list[int], Path], dict[str, list[int]]]
    case_name: Callable[[int], str]
    extra: dict


# A partial download (e.g. part of LiTS) whose paper split leaves a split empty is split like own data.
FALLBACK_SPLIT = {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}


def fallback_split(cases: list[str], raw: Path, why: str, unit: str = "case") -> tuple[dict[str, list[str]], str]:
    """The seeded split (`FALLBACK_SPLIT`) of `cases` when a dataset's own cannot be used, and the
    `split_source` that says so: `why`, then how ("... split by case with seed 0, ...")."""
    how = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in FALLBACK_SPLIT.items())
    return split_cases(cases, **FALLBACK_SPLIT, source=raw), f"seeded fallback: {why} split by {unit} with {how}"


def prepare_numbered(layout: NumberedLayout, raw: Path, out: Path, *, hu_window: tuple[float, float],
                     overwrite: bool = False, log: Log = None) -> Path:
    """Prepare a numbered CT layout: files found anywhere below `raw`, RAS, axial, HU window -> [0, 1].

    The paper's split is used unless it leaves train, val or test empty (a partial download):
    then the cases get a seeded split by case (`FALLBACK_SPLIT`), said in the log and `mona.json`.
    """
    raw = raw_folder(raw)
    pairs = {int(key): pair for key, pair in
             find_pairs(raw, raw, layout.image_pattern, layout.label_pattern, layout.what).items()}
    splits = {split: [layout.case_name(n) for n in numbers]
              for split, numbers in layout.split(list(pairs), raw).items()}
    sources = {layout.case_name(n): pair for n, pair in pairs.items()}
    split_source = f"the paper's {layout.name} split"
    empty = [split for split in SPLITS if not splits[split]]
    if empty:
        splits, split_source = fallback_split(sorted(sources), raw, f"the paper's {layout.name} split leaves "
                                              f"{' and '.join(empty)} empty with these {len(sources)} cases;")
    meta = DatasetMeta(layout.name, layout.classes, "CT", *window_normalisation(*hu_window), layout.label_map,
                       layout.budgets, split_source=split_source, extra=layout.extra)
    return write_dataset(out, meta, splits, sources, raw=raw, overwrite=overwrite, log=log)
