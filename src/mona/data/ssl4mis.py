"""Reader of the SSL4MIS dataset layout, labeled budgets in patients, and the two-stream sampler.

Layout: `train_slices.list`, `val.list`, `test.list`, `data/slices/<slice>.h5` (2D) and
`data/<volume>.h5` (3D), keys `image` (float in [0, 1], or uint8 read as value / 255) and
`label` (uint8). An optional `mona.json` (written by `mona synth` and `mona prepare`) names
the classes and spacings, and the `unlabeled_cases`: training volumes whose slices hold only
an `image`. Any other slice without a `label` is an error (a broken file, not unlabeled data).

Budgets: `labeled` N is every slice of the first N patients with labels, in
`train_slices.list` order; "all" is every slice with a label. The unlabeled stream is every
other training slice: those without a label, and labeled slices outside the budget with their
labels hidden. Labeled slices inside the budget are *not* also drawn as unlabeled: this is
SSL4MIS's two-stream sampler (labeled indices vs the rest), so the published ACDC protocol
(1/3/7 patients, the other 63-69 unlabeled) is unchanged; with "all" on a fully labeled set
there is no unlabeled stream, as before.

Training slices are read once, checked, resized to the training size (images linearly,
labels with nearest) and kept in memory as tensors, so a batch is an index lookup and
augmentation runs batched on the training device: the data pipeline never stalls a step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from mona.augment.weak import resize_images, resize_labels
from mona.errors import MonaError

ACDC_CLASSES = ["background", "RV", "Myo", "LV"]
# How raw scans became the arrays, and which raw mask value each class index stands for (`label_values`,
# own data: `mona predict` writes masks in those values)
PREPROCESSING_KEYS = ("normalisation", "orientation", "slicing_axis", "label_values")


def volume_of(slice_name: str) -> str:
    """`patient099_frame01_slice_15` -> `patient099_frame01`."""
    return re.sub(r"_slice_\d+$", "", slice_name)


def patient_of(name: str) -> str:
    """`patient099_frame01[_slice_15]` -> `patient099`: the unit of the labeled budget."""
    return re.sub(r"_frame\d+$", "", volume_of(name))


def read_list(path: Path, text: str | None = None) -> list[str]:
    """Non-empty lines of a list file (`text` when already read, e.g. from package data)."""
    if text is None:
        if not path.is_file():
            raise MonaError("list file is missing (is this an SSL4MIS-layout dataset?)", path)
        text = path.read_text()
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise MonaError("list file is empty", path)
    return names


def read_h5(path: Path, ndim: int, num_classes: int, need_label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and check `image` (and `label`) of one h5 file; every problem names the file."""
    if not path.is_file():
        raise MonaError("file is missing (named in a list file)", path)
    try:
        with h5py.File(path, "r") as handle:
            if "image" not in handle or (need_label and "label" not in handle):
                raise MonaError(f"h5 file lacks the 'image' or 'label' dataset (has {sorted(handle.keys())})", path)
            image = handle["image"][()]
            image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
            label = np.asarray(handle["label"][()]) if "label" in handle else None
    except MonaError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError and others for corrupt files
        raise MonaError(f"cannot read h5 file ({exc.__class__.__name__}: {exc})", path) from None
    if image.ndim != ndim:
        raise MonaError(f"image has {image.ndim} dimensions, expected {ndim}", path)
    if not np.isfinite(image).all():
        raise MonaError("image contains NaN or infinite values", path)
    if label is not None:
        if label.shape != image.shape:
            raise MonaError(f"image shape {image.shape} and label shape {label.shape} differ", path)
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise MonaError(f"label values {sorted(np.unique(label).tolist())} outside 0..{num_classes - 1}", path)
        label = label.astype(np.uint8)
    return image, label


@dataclass
class DatasetInfo:
    root: Path
    num_classes: int
    class_names: list[str]
    spacing: dict[str, tuple[float, ...]]  # per volume, in h5 array-axis order
    metadata: dict

    @property
    def preprocessing(self) -> dict:
        """How raw scans became this dataset's arrays (normalisation, orientation, slicing axis) and the
        raw mask values of the classes, from `mona.json`; every checkpoint carries it, so `predict`
        needs the run folder alone."""
        meta = self.metadata.get("preprocessing") or self.metadata
        return {"normalisation": "minmax", **{key: meta[key] for key in PREPROCESSING_KEYS if key in meta}}


def dataset_info(root: str | Path, num_classes: int = 0) -> DatasetInfo:
    """Classes and spacings from `mona.json` when present, else ACDC's four classes."""
    root = Path(root)
    if not root.is_dir():
        raise MonaError("dataset folder does not exist", root)
    meta_path = root / "mona.json"
    metadata: dict = {}
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise MonaError(f"metadata is not valid JSON ({exc})", meta_path) from None
    names = metadata.get("classes") or (ACDC_CLASSES if not num_classes or num_classes == 4 else None)
    count = num_classes or metadata.get("num_classes") or len(names)
    if names is None or len(names) != count:
        names = ["background"] + [f"class{i}" for i in range(1, count)]
    spacing = {case: tuple(v["spacing"]) for case, v in metadata.get("cases", {}).items() if v.get("spacing")}
    return DatasetInfo(root, count, list(names), spacing, metadata)


def split_budget(slice_names: list[str], labeled: str,
                 has_label: list[bool] | None = None) -> tuple[list[int], list[int]]:
    """Indices of the labeled and the unlabeled stream (module docstring): the labeled slices of the
    first N patients with labels, or every labeled slice ("all"); the rest. `has_label` (one per
    slice, default all True) says which slices carry a label."""
    has_label = [True] * len(slice_names) if has_label is None else has_label
    patients = list(dict.fromkeys(patient_of(name) for name, known in zip(slice_names, has_label) if known))
    if labeled == "all":
        chosen = set(patients)
    else:
        count = int(labeled)
        if count > len(patients):
            raise MonaError(f"asked for {count} labeled patients but the training list has {len(patients)} patients "
                            "with labels")
        chosen = set(patients[:count])
    if not chosen:
        raise MonaError("the training list has no labeled slices: at least one patient needs masks")
    in_budget = [known and patient_of(name) in chosen for name, known in zip(slice_names, has_label)]
    return ([i for i, inside in enumerate(in_budget) if inside],
            [i for i, inside in enumerate(in_budget) if not inside])


def training_volumes(root: str | Path, labeled: str,
                     unlabeled_cases: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """A run's training volumes in dataset `root`: (those of the labeled budget `labeled`, {volume: its
    slice names in slice order} for all of them, the budget's first, then the unlabeled stream's), from
    `train_slices.list` as the loader splits it (`split_budget`; `unlabeled_cases` have no masks)."""
    names = read_list(Path(root) / "train_slices.list")
    unlabeled = set(unlabeled_cases)
    inside, outside = split_budget(names, labeled, [volume_of(name) not in unlabeled for name in names])
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(volume_of(name), []).append(name)
    for slices in groups.values():
        slices.sort(key=lambda name: int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else 0)
    budget = list(dict.fromkeys(volume_of(names[i]) for i in inside))
    rest = list(dict.fromkeys(volume_of(names[i]) for i in outside if volume_of(names[i]) not in budget))
    return budget, {volume: groups[volume] for volume in [*budget, *rest]}


@dataclass
class SliceStore:
    """Training slices resized to the network size, in memory: images (N,1,S,S), labels (N,S,S)
    or None for a store without labels (the unlabeled stream)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str]

    def batch(self, indices: torch.Tensor, device: torch.device, with_label: bool = True) -> dict[str, torch.Tensor]:
        """A batch on `device`; unlabeled streams are drawn without labels so no method can peek."""
        batch = {"image": rows_to_device(self.images, indices, device)}
        if with_label:
            if self.labels is None:
                raise ValueError("this slice store holds no labels (the unlabeled stream)")
            batch["label"] = rows_to_device(self.labels, indices, device).long()
        return batch


def rows_to_device(store: torch.Tensor, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `indices` of a host tensor on `device`. For CUDA they are gathered straight into pinned
    memory and copied without waiting: one host copy and one transfer per tensor and step, and the
    host queues the step's work while the batch is on its way (labels go as uint8, widened there)."""
    if device.type != "cuda":
        return store[indices].to(device)
    rows = torch.empty((len(indices), *store.shape[1:]), dtype=store.dtype, pin_memory=True)
    torch.index_select(store, 0, indices, out=rows)
    return rows.to(device, non_blocking=True)


def read_slices(info: DatasetInfo, names: list[str], size: int) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Images (N,1,S,S) and each slice's label (S,S) resized to `size`; a slice of a volume in
    `mona.json`'s `unlabeled_cases` has no label (None), any other must have one."""
    unlabeled = set(info.metadata.get("unlabeled_cases") or ())
    images, labels = [], []
    for name in names:
        known = volume_of(name) not in unlabeled
        image, label = read_h5(info.root / "data" / "slices" / f"{name}.h5", 2, info.num_classes, need_label=known)
        images.append(resize_images(torch.from_numpy(image)[None, None], (size, size))[0])
        labels.append(resize_labels(torch.from_numpy(label)[None], (size, size))[0] if known else None)
    return torch.stack(images), labels


@dataclass
class TrainData:
    labeled: SliceStore
    unlabeled: SliceStore | None  # without labels; None when every training slice is in the budget


def load_train_data(info: DatasetInfo, labeled: str, size: int) -> TrainData:
    """The labeled budget and the unlabeled stream of `train_slices.list` (module docstring)."""
    names = read_list(info.root / "train_slices.list")
    images, labels = read_slices(info, names, size)
    labeled_idx, unlabeled_idx = split_budget(names, labeled, [label is not None for label in labels])
    budget = SliceStore(images[labeled_idx], torch.stack([labels[i] for i in labeled_idx]),
                        [names[i] for i in labeled_idx])
    rest = SliceStore(images[unlabeled_idx], None, [names[i] for i in unlabeled_idx]) if unlabeled_idx else None
    return TrainData(budget, rest)


@dataclass
class Volume3D:
    name: str
    image: np.ndarray  # (D, H, W) float32
    label: np.ndarray | None  # (D, H, W) uint8
    spacing: tuple[float, ...] | None


def load_volumes(info: DatasetInfo, split: str) -> list[Volume3D]:
    """The val or test volumes named in `<split>.list`, checked. A dataset prepared with no test
    cases (too few masks) has no `test.list`: asking for it says so."""
    path = info.root / f"{split}.list"
    if not path.is_file() and (info.metadata.get("splits") or {}).get(split) == []:
        raise MonaError(f"this dataset has no {split} cases (prepared with too few masks or --test-fraction 0): "
                        "score the val split, or prepare it again with more masks", path)
    volumes = []
    for name in read_list(path):
        image, label = read_h5(info.root / "data" / f"{name}.h5", 3, info.num_classes)
        volumes.append(Volume3D(name, image, label, info.spacing.get(name)))
    return volumes


def sample_indices(count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` distinct indices (with repeats only when the set is smaller than the batch)."""
    if count >= batch:
        return torch.randperm(count, generator=generator)[:batch]
    return torch.randint(0, count, (batch,), generator=generator)
