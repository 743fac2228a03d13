"""Raw layouts of CT files numbered by case (LiTS, MM-WHS): found, split as their paper does (or
seeded when a partial download leaves a split empty), HU-windowed and written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mona.data.prepare.finding import find_pairs, raw_folder
from mona.data.prepare.normalise import window_normalisation
from mona.data.prepare.reading import Log
from mona.data.prepare.splitting import SPLITS, fallback_split
from mona.data.prepare.writing import DatasetMeta, write_dataset


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
