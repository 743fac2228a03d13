"""Splitting prepared cases into train, val and test by patient, seeded, and saying how."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mona.data.ssl4mis import patient_of, volume_of
from mona.errors import MonaError

SPLITS = ("train", "val", "test")


def derive_volumes(slice_names: list[str]) -> list[str]:
    """Volumes of a slice list in order of first appearance (`train.list` from `train_slices.list`)."""
    return list(dict.fromkeys(volume_of(n) for n in slice_names))


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


# A partial download (e.g. part of LiTS) whose paper split leaves a split empty is split like own data.
FALLBACK_SPLIT = {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}


def fallback_split(cases: list[str], raw: Path, why: str, unit: str = "case") -> tuple[dict[str, list[str]], str]:
    """The seeded split (`FALLBACK_SPLIT`) of `cases` when a dataset's own cannot be used, and the
    `split_source` that says so: `why`, then how ("... split by case with seed 0, ...")."""
    how = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in FALLBACK_SPLIT.items())
    return split_cases(cases, **FALLBACK_SPLIT, source=raw), f"seeded fallback: {why} split by {unit} with {how}"
