"""Writing a prepared dataset in the SSL4MIS layout (with `mona.json`): staged in a temporary folder
and moved into place only once it is complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np

from mona.data.prepare.reading import Log, read_case
from mona.data.prepare.splitting import SPLITS, derive_volumes, split_summary
from mona.errors import MonaError


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
