"""`mona prepare nnunet`: any single-channel nnU-Net v2 raw dataset -> the SSL4MIS layout.

Raw: `dataset.json` (`channel_names` with one channel, `labels` name -> integer value with
background 0, `file_ending` .nii.gz or .nii), `imagesTr/<case>_0000<ending>`,
`labelsTr/<case><ending>`; optional `imagesTs/` with `labelsTs/`: labelled test cases become
the test split (unlabelled test images cannot be scored and are ignored).

Volumes are reoriented to closest RAS and sliced along the axis of largest median spacing
(ties go to the later axis, i.e. axial), unless `axis` is given. Label values are mapped to
0..K-1 in ascending order. Intensities are clipped to a window then scaled to [0, 1]: the
given `hu_window`; else, for a channel named CT, the 0.5/99.5 percentiles of foreground
intensities of the training cases (as nnU-Net estimates its CT window); else each volume's
own 0.5/99.5 percentiles.
Cases are split by a seeded shuffle; the training list keeps the shuffled order, so the
labeled budget of N patients (the first N lines) is a seeded random draw.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mona.data.prepare.common import (DatasetMeta, Log, canonical_spacing, check_output, find_pairs, load_nifti,
                                     percentile_window, raw_folder, read_raw, window_normalisation, write_dataset)
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


def split_cases(cases: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Seeded shuffle of the sorted cases; test then val take round(fraction * n), at least one
    when the fraction is positive; train keeps the shuffled order, val and test are sorted."""
    for name, fraction in (("validation", val_fraction), ("test", test_fraction)):
        if not 0 <= fraction < 1:
            raise MonaError(f"the {name} fraction must lie in [0, 1), got {fraction}")
    order = [sorted(cases)[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    n_test, n_val = (0 if f == 0 else max(1, round(f * len(cases))) for f in (test_fraction, val_fraction))
    if n_test + n_val >= len(cases):
        raise MonaError(f"{len(cases)} cases leave none for training after {n_val} validation and {n_test} test")
    return {"train": order[n_test + n_val:], "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}


def largest_spacing_axis(images: list[Path]) -> int:
    """The RAS axis with the largest median voxel size (ties within 0.1 % go to the later axis)."""
    spacing = np.median([canonical_spacing(load_nifti(path)) for path in images], axis=0)
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
                   hu_window: tuple[float, float] | None = None, log: Log = None) -> Path:
    """Prepare an nnU-Net raw dataset; `test_fraction` defaults to 0 when labelled `imagesTs` give
    the test split, else 0.2. `labeled` (N first training cases) is checked and noted in `mona.json`."""
    dataset = raw_folder(dataset)
    check_output(out, raw=dataset, overwrite=overwrite)  # before the CT window pass reads every volume
    info = read_dataset_json(dataset)
    ending = re.escape(info["file_ending"])
    sources = find_pairs(dataset / "imagesTr", dataset / "labelsTr", rf"(.+)_0000{ending}", rf"(.+){ending}",
                         f"imagesTr/<case>_0000{info['file_ending']} files")
    test_sources = {}
    if (dataset / "labelsTs").is_dir():
        test_sources = find_pairs(dataset / "imagesTs", dataset / "labelsTs", rf"(.+)_0000{ending}", rf"(.+){ending}",
                                  f"imagesTs/<case>_0000{info['file_ending']} files")
    if test_fraction is None:
        test_fraction = 0.0 if test_sources else 0.2
    splits = split_cases(list(sources), seed, val_fraction, test_fraction)
    splits["test"] = sorted(splits["test"] + list(test_sources))
    sources.update(test_sources)
    if labeled is not None and not 1 <= labeled <= len(splits["train"]):
        raise MonaError(f"--labeled {labeled}: the training split has {len(splits['train'])} cases", dataset)

    channel = str(next(iter(info["channel_names"].values())))
    if hu_window is None and channel.casefold() == "ct":
        hu_window = foreground_window([sources[name] for name in splits["train"]], seed)
    if hu_window is None:
        normalisation = (f"percentiles {PERCENTILES} of each volume -> [0, 1]",
                         lambda image: percentile_window(image, *PERCENTILES))
    else:
        normalisation = window_normalisation(*hu_window)
    values = sorted(info["labels"].values())
    by_value = {value: name for name, value in info["labels"].items()}
    axis = largest_spacing_axis([pair[0] for pair in sources.values()]) if axis is None else axis
    meta = DatasetMeta(str(info.get("name") or dataset.name), [by_value[v] for v in values], channel, *normalisation,
                       {value: index for index, value in enumerate(values)},
                       [labeled] if labeled else [], slicing_axis=axis,
                       extra={"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                              "labeled": labeled, "label_values": values})
    return write_dataset(out, meta, splits, sources, raw=dataset, overwrite=overwrite, log=log)
