"""Finding a raw dataset's files: scans and masks paired by name, what was skipped, and why."""

from __future__ import annotations

import re
from pathlib import Path

from mona.data.io import dicom_files, find_dicom_series
from mona.data.prepare.reading import Log
from mona.errors import MonaError

# A scan file name: the case, nnU-Net's optional `_0000` channel suffix, a NIfTI ending.
SCAN_PATTERN = r"(.+?)(?:_0000)?\.nii(?:\.gz)?"
SCANS = "scans (.nii.gz, .nii, or a folder holding one DICOM series)"


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
