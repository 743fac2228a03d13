"""`mona prepare acdc`: the official ACDC download -> the SSL4MIS layout, array for array
equal to the prepared copy the benchmarks use (antares0811/3DCardiac, SSL4MIS lists).

Raw: `training/patientXXX/{Info.cfg, patientXXX_frameYY.nii.gz, patientXXX_frameYY_gt.nii.gz}`;
`testing/` (patients 101-150) is not part of the SSL4MIS protocol and is ignored. The
benchmark names the end-diastole frame `frame01` and the end-systole frame `frame02`
whatever their numbers in `Info.cfg` (`ED: 1`, `ES: 12`), so cases are named that way.
Volumes keep the stored voxel order (SSL4MIS ignores the affine), transposed to (z, y, x),
and are min-max scaled per volume; the splits are the canonical lists in `mona/splits/acdc`.
A partial download, which lacks patients those lists name, gets a seeded split of the patients
it has instead (`FALLBACK_SPLIT`, as LiTS and MM-WHS), said in the log and in `mona.json`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from mona.data.prepare.finding import raw_folder
from mona.data.prepare.normalise import minmax
from mona.data.prepare.reading import Log, identity_labels
from mona.data.prepare.splitting import derive_volumes, fallback_split
from mona.data.prepare.writing import DatasetMeta, write_dataset
from mona.data.ssl4mis import patient_of, read_list
from mona.errors import MonaError

CLASSES = ["background", "RV", "Myo", "LV"]
BUDGETS = [1, 3, 7]
PHASES = {"frame01": "ED", "frame02": "ES"}
LISTS = ("train_slices", "val", "test")


def split_lists(folder: Path | None = None) -> dict[str, list[str]]:
    """`train_slices`, `val` and `test` names from `folder`, or the SSL4MIS lists shipped with mona."""
    lists = {}
    for stem in LISTS:
        if folder is None:
            resource = resources.files("mona").joinpath(f"splits/acdc/{stem}.list")
            lists[stem] = read_list(Path(str(resource)), resource.read_text())
        else:
            lists[stem] = read_list(Path(folder) / f"{stem}.list")
    return lists


def read_info(path: Path) -> dict[str, int]:
    """The ED and ES frame numbers of a patient's `Info.cfg` (lines `ED: 1`, `ES: 12`)."""
    if not path.is_file():
        raise MonaError("Info.cfg is missing (it names the ED and ES frames)", path)
    found = dict(re.findall(r"^\s*(ED|ES)\s*:\s*(\d+)\s*$", path.read_text(errors="replace"), flags=re.M))
    if set(found) != {"ED", "ES"}:
        raise MonaError("Info.cfg lacks an 'ED: <frame>' or 'ES: <frame>' line", path)
    return {phase: int(frame) for phase, frame in found.items()}


def find_patients(raw: Path) -> dict[str, Path]:
    """`patientXXX` -> its folder, anywhere under `raw` (`training/` and `testing/` alike)."""
    patients: dict[str, Path] = {}
    for folder in sorted(Path(raw).rglob("patient[0-9][0-9][0-9]")):
        if folder.is_dir():
            if folder.name in patients:
                raise MonaError(f"patient folder appears twice (also {patients[folder.name]})", folder)
            patients[folder.name] = folder
    if not patients:
        raise MonaError("no ACDC patient folders (training/patientXXX) found (empty dataset)", raw)
    return patients


def frame_files(patients: dict[str, Path], case: str, raw: Path) -> tuple[Path, Path]:
    """(image, ground truth) NIfTI of a case `patientXXX_frame01` (ED) or `_frame02` (ES)."""
    patient, tag = case.rsplit("_", 1)
    if patient not in patients:
        raise MonaError(f"no folder for {patient}, whose case {case} the split lists name", raw)
    folder = patients[patient]
    frame = read_info(folder / "Info.cfg")[PHASES[tag]]
    stem = f"{patient}_frame{frame:02d}"
    image = next((folder / f"{stem}{ext}" for ext in (".nii.gz", ".nii") if (folder / f"{stem}{ext}").is_file()), None)
    if image is None:
        raise MonaError(f"{PHASES[tag]} frame image is missing", folder / f"{stem}.nii.gz")
    label = image.with_name(image.name.replace(stem, f"{stem}_gt"))
    if not label.is_file():
        raise MonaError(f"image has no label file (expected {label.name})", image)
    return image, label


def prepare_acdc(raw: Path, out: Path, *, overwrite: bool = False, lists: Path | None = None, log: Log = None) -> Path:
    """Prepare ACDC from `raw` into `out`; `lists` is a folder of other split lists (tests, custom splits),
    which must name only patients `raw` holds. Without `lists`, a partial download is split by patient
    with a seed (module docstring)."""
    raw = raw_folder(raw)
    names = split_lists(lists)
    splits = {"train": derive_volumes(names["train_slices"]), "val": names["val"], "test": names["test"]}
    for name in (n for split in splits.values() for n in split):
        if not re.fullmatch(r"patient\d{3}_frame0[12]", name):
            raise MonaError(f"'{name}' in the split lists is not an ACDC case (patientXXX_frame01|02)", lists)
    patients = find_patients(raw)
    train_slices, split_source = names["train_slices"], f"SSL4MIS lists ({lists or 'mona/splits/acdc'})"
    listed = {patient_of(name) for split in splits.values() for name in split}
    missing = sorted(listed - set(patients))
    if missing and lists is None:
        present = sorted(listed & set(patients))  # the protocol's patients (training/), not testing/'s
        splits, split_source = fallback_split(
            [f"{patient}_{tag}" for patient in present for tag in PHASES], raw,
            f"the SSL4MIS split cannot be used, {len(missing)} of its {len(listed)} patients are not here (first "
            f"{missing[0]}); these {len(present)} patients are", unit="patient")
        train_slices = None
    sources = {name: frame_files(patients, name, raw) for split in splits.values() for name in split}
    meta = DatasetMeta("ACDC", CLASSES, "MRI", "minmax", minmax, identity_labels(CLASSES), BUDGETS,
                       canonical=False, split_source=split_source, extra={"phases": PHASES})
    return write_dataset(out, meta, splits, sources, raw=raw, overwrite=overwrite, train_slices=train_slices,
                         log=log)
