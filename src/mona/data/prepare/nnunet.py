"""`mona prepare nnunet`: any single-channel nnU-Net v2 raw dataset -> the SSL4MIS layout; and the
code path it shares with `mona prepare folder` (`prepare_partly_labeled`) for partly labeled data.

Raw: `dataset.json` (`channel_names` with one channel, `labels` name -> integer value with
background 0, `file_ending` .nii.gz or .nii), `imagesTr/<case>_0000<ending>`,
`labelsTr/<case><ending>`; optional `imagesTs/` with `labelsTs/`: labelled test cases become
the test split (unlabelled test images are ignored unless given as `unlabeled`).
An `imagesTr` case without a `labelsTr` file is an unlabeled training case, and so is every scan
of the `unlabeled` folder: unlabeled cases only train (their slices carry no `label`), never
validate or test.

Volumes are reoriented to closest RAS and sliced along the axis of largest median spacing of
the labeled cases (ties go to the later axis, i.e. axial), unless `axis` is given. Label values
are mapped to 0..K-1 in ascending order. Intensities are clipped to a window then scaled to
[0, 1]: the given `hu_window`; else, for a channel named CT, the 0.5/99.5 percentiles of
foreground intensities of the labeled training cases (as nnU-Net estimates its CT window);
else each volume's own 0.5/99.5 percentiles. Unlabeled cases are read the same way.
Labeled cases are split by patient with a seeded shuffle (`split_cases`); the training list
keeps the shuffled order, so the labeled budget of N patients (the first N lines) is a seeded
random draw.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mona.data.prepare.finding import SCANS, find_pairs, find_scans, log_skipped, raw_folder
from mona.data.prepare.normalise import percentile_window, window_normalisation
from mona.data.prepare.reading import Log, canonical_spacing, read_raw, scan_affine
from mona.data.prepare.splitting import split_cases
from mona.data.prepare.writing import DatasetMeta, check_output, write_dataset
from mona.data.ssl4mis import patient_of
from mona.errors import MonaError

ENDINGS = (".nii.gz", ".nii")
FOREGROUND_SAMPLES = 10000  # voxels drawn per training case for the CT window, as nnU-Net does
PERCENTILES = (0.5, 99.5)


def read_dataset_json(folder: Path) -> dict:
    """`dataset.json`, checked for what MONA needs: one channel, integer labels with 0, a NIfTI ending."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise MonaError("dataset.json is missing (is this an nnU-Net raw dataset folder?)", path)
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MonaError(f"not valid JSON ({exc})", path) from None
    missing = [key for key in ("channel_names", "labels", "file_ending") if key not in info]
    if missing:
        raise MonaError(f"lacks {', '.join(missing)}", path)
    if not isinstance(info["channel_names"], dict) or len(info["channel_names"]) != 1:
        raise MonaError(f"MONA segments single-channel images, channel_names is {info['channel_names']}", path)
    labels = info["labels"]
    if not isinstance(labels, dict) or not all(type(v) is int for v in labels.values()):
        raise MonaError(f"labels must map names to integer values (region-based labels are not supported): {labels}",
                        path)
    if 0 not in labels.values() or len(set(labels.values())) != len(labels):
        raise MonaError(f"labels must have distinct values including 0 (background): {labels}", path)
    if info["file_ending"] not in ENDINGS:
        raise MonaError(f"file_ending {info['file_ending']!r} is not supported (use {' or '.join(ENDINGS)})", path)
    return info


def largest_spacing_axis(images: list[Path]) -> int:
    """The RAS axis with the largest median voxel size (ties within 0.1 % go to the later axis)."""
    spacing = np.median([canonical_spacing(scan_affine(path)) for path in images], axis=0)
    return int(np.flatnonzero(spacing >= spacing.max() * (1 - 1e-3))[-1])


def foreground_window(pairs: list[tuple[Path, Path]], seed: int) -> tuple[float, float]:
    """0.5/99.5 percentiles of foreground (label != 0) intensities, sampled per case."""
    rng = np.random.default_rng(seed)
    samples = []
    for image_path, label_path in pairs:
        image, label, _, _ = read_raw(image_path, label_path, canonical=False, axis=2)
        values = image[label != 0]
        samples.append(rng.choice(values, min(FOREGROUND_SAMPLES, values.size), replace=False))
    values = np.concatenate(samples)
    if not values.size:
        raise MonaError("the training labels have no foreground to estimate the CT window from; pass --window LO HI",
                        pairs[0][1].parent)
    low, high = np.percentile(values, PERCENTILES)
    return float(low), float(high)


def prepare_nnunet(dataset: Path, out: Path, *, overwrite: bool = False, seed: int = 0, val_fraction: float = 0.1,
                   test_fraction: float | None = None, labeled: int | None = None, axis: int | None = None,
                   hu_window: tuple[float, float] | None = None, unlabeled: Path | None = None,
                   log: Log = None) -> Path:
    """Prepare an nnU-Net raw dataset (see the module docstring); `unlabeled` is a folder of more
    scans without masks. Options as `prepare_partly_labeled`."""
    dataset = raw_folder(dataset)
    info = read_dataset_json(dataset)
    ending = re.escape(info["file_ending"])
    sources = find_pairs(dataset / "imagesTr", dataset / "labelsTr", rf"(.+)_0000{ending}", rf"(.+){ending}",
                         f"imagesTr/<case>_0000{info['file_ending']} files", require_labels=False)
    test_sources = {}
    if (dataset / "labelsTs").is_dir():
        test_sources = find_pairs(dataset / "imagesTs", dataset / "labelsTs", rf"(.+)_0000{ending}", rf"(.+){ending}",
                                  f"imagesTs/<case>_0000{info['file_ending']} files")
    by_value = {value: name for name, value in info["labels"].items()}
    values = sorted(by_value)
    return prepare_partly_labeled(
        dataset, out, name=str(info.get("name") or dataset.name), classes=[by_value[v] for v in values],
        label_values=values, modality=str(next(iter(info["channel_names"].values()))), sources=sources,
        test_sources=test_sources, unlabeled=unlabeled, overwrite=overwrite, seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, labeled=labeled, axis=axis, hu_window=hu_window, log=log)


def prepare_partly_labeled(raw: Path, out: Path, *, name: str, classes: list[str], label_values: list[int],
                           modality: str, sources: dict[str, tuple[Path, Path | None]],
                           test_sources: dict[str, tuple[Path, Path]] | None = None, unlabeled: Path | None = None,
                           overwrite: bool = False, seed: int = 0, val_fraction: float = 0.1,
                           test_fraction: float | None = None, labeled: int | None = None, axis: int | None = None,
                           hu_window: tuple[float, float] | None = None, extra: dict | None = None,
                           log: Log = None) -> Path:
    """Prepare own scans, some with a mask: `sources` case -> (scan, mask or None), `test_sources`
    labeled test-only cases, `unlabeled` a folder of more scans without masks.

    `label_values` are the raw mask values of `classes`, in order. Labeled cases are split by
    `split_cases(seed, val_fraction, test_fraction)`; `test_fraction` defaults to 0 when
    `test_sources` give the test split, else 0.2. `labeled` (N first training patients) is
    checked (the reader counts patients) and noted in `mona.json`. Orientation, slicing axis and
    normalisation are as in the module docstring; their statistics come from the labeled cases only.
    """
    test_sources = test_sources or {}
    sources = {**sources, **test_sources}
    if unlabeled is not None:
        more = find_scans(unlabeled)
        log_skipped(Path(unlabeled), [scan for scan, _ in more.values()], SCANS, log)
        clash = sorted(set(more) & set(sources))
        if clash:
            raise MonaError(f"case {clash[0]} is also in {raw} (case names must be unique)", more[clash[0]][0])
        sources.update(more)
    for folder in (raw, unlabeled):
        if folder is not None:  # before the CT window pass reads every volume
            check_output(out, raw=folder, overwrite=overwrite)
    masked = [case for case, (_, label) in sources.items() if label is not None and case not in test_sources]
    if test_fraction is None:
        test_fraction = 0.0 if test_sources else 0.2
    splits = split_cases(masked, seed, val_fraction, test_fraction, raw)
    splits["test"] = sorted(splits["test"] + list(test_sources))
    splits["unlabeled"] = sorted(case for case, (_, label) in sources.items() if label is None)
    patients = len({patient_of(case) for case in splits["train"]})
    if labeled is not None and not 1 <= labeled <= patients:
        raise MonaError(f"--labeled {labeled}: the training split has {patients} labeled patients", raw)

    if hu_window is None and modality.casefold() == "ct":
        hu_window = foreground_window([sources[case] for case in splits["train"]], seed)
    if hu_window is None:
        normalisation = (f"percentiles {PERCENTILES} of each volume -> [0, 1]",
                         lambda image: percentile_window(image, *PERCENTILES))
    else:
        normalisation = window_normalisation(*hu_window)
    with_masks = [sources[case][0] for split in ("train", "val", "test") for case in splits[split]]
    axis = largest_spacing_axis(with_masks) if axis is None else axis
    label_map = {value: index for index, value in enumerate(label_values)}
    split_source = (f"seeded by patient (seed {seed}, val fraction {val_fraction}, test fraction {test_fraction}"
                    f"{', plus the labelled imagesTs' if test_sources else ''})")
    meta = DatasetMeta(name, classes, modality, *normalisation, label_map, [labeled] if labeled else [],
                       slicing_axis=axis, split_source=split_source,
                       extra={"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                              "labeled": labeled, "label_values": label_values,
                              **({"unlabeled_source": str(Path(unlabeled).resolve())} if unlabeled else {}),
                              **(extra or {})})
    return write_dataset(out, meta, splits, sources, raw=raw, overwrite=overwrite, log=log)
