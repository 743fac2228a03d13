"""`mona prepare mmwhs`: the MM-WHS CT training download -> the SSL4MIS layout.

Raw: `ct_train_10XX_image.nii.gz` with `ct_train_10XX_label.nii.gz` anywhere below RAW
(1001-1020). Test: 1001, 1002, 1008, 1014, 1015 (the spec's). Of the 15 training volumes,
1020 is carved out for validation; the other 14 are listed 1018, 1004, then ascending, so
the budgets of 1 and 2 volumes are {1018} and {1018, 1004} as the paper's. Raw label values
500, 600, 420, 550, 205, 820, 850 become LV, RV, LA, RA, Myo, AAo, PA = 1..7; 421, a stray
value of the LA in the real labels, is LA too; any other value is an error. Volumes are
reoriented to closest RAS, sliced axially, HU clipped to [-200, 800] (myocardium to contrast-
filled chambers and vessels) and scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

from mona.data.prepare.numbered import NumberedLayout, prepare_numbered
from mona.data.prepare.reading import Log
from mona.errors import MonaError

CLASSES = ["background", "LV", "RV", "LA", "RA", "Myo", "AAo", "PA"]
LABEL_MAP = {0: 0, 500: 1, 600: 2, 420: 3, 421: 3, 550: 4, 205: 5, 820: 6, 850: 7}
WINDOW = (-200.0, 800.0)
TEST = (1001, 1002, 1008, 1014, 1015)
VAL = (1020,)
FIRST = (1018, 1004)


def split_mmwhs(numbers: list[int], raw: Path) -> dict[str, list[int]]:
    """Train (1018, 1004 first, then ascending) / val / test volume numbers; outside 1001-1020 is an error."""
    outside = sorted(set(numbers) - set(range(1001, 1021)))
    if outside:
        raise MonaError(f"MM-WHS CT training volumes are numbered 1001-1020, found {outside[:5]}", raw)
    rest = sorted(set(numbers) - set(TEST) - set(VAL) - set(FIRST))
    return {"train": [n for n in FIRST if n in numbers] + rest,
            "val": [n for n in VAL if n in numbers], "test": [n for n in TEST if n in numbers]}


LAYOUT = NumberedLayout(
    "MMWHS", CLASSES, LABEL_MAP, [1, 2], r"ct_train_(\d+)_image\.nii(?:\.gz)?", r"ct_train_(\d+)_label\.nii(?:\.gz)?",
    "MM-WHS ct_train_10XX_image.nii.gz files", split_mmwhs, lambda n: f"ct_{n}",
    extra={"label_map": {str(k): v for k, v in LABEL_MAP.items()}})


def prepare_mmwhs(raw: Path, out: Path, *, overwrite: bool = False, hu_window: tuple[float, float] = WINDOW,
                  log: Log = None) -> Path:
    """Prepare MM-WHS CT from `raw` into `out` (see the module docstring for splits and labels)."""
    return prepare_numbered(LAYOUT, raw, out, hu_window=hu_window, overwrite=overwrite, log=log)
