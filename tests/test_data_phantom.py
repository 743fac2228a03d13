"""The built-in phantom: layout readable by plain h5py, splits, label statistics, determinism, safe writing."""

import json
import re
from itertools import groupby

import h5py
import numpy as np
import pytest

from mona.data.phantom import split_counts, write_phantom
from mona.errors import MonaError

PATIENTS = 10  # 7 train / 1 val / 2 test


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("phantom") / "ds", patients=PATIENTS, seed=3)


def read(path):
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"image", "label"}
        return f["image"][()], f["label"][()]


def lines(path):
    return path.read_text().split()


def all_arrays(root):
    names = lines(root / "train_slices.list")
    slices = [read(root / "data" / "slices" / f"{n}.h5") for n in names]
    volumes = [read(root / "data" / f"{c}.h5") for c in lines(root / "val.list") + lines(root / "test.list")]
    return slices, volumes


def test_split_counts():
    assert split_counts(20) == (14, 2, 4)
    assert split_counts(PATIENTS) == (7, 1, 2)
    assert split_counts(3) == (1, 1, 1)


def test_lists_follow_splits_and_group_training_slices_by_patient(phantom):
    names = lines(phantom / "train_slices.list")
    patients = [p for p, _ in groupby(re.sub(r"_frame.*", "", n) for n in names)]
    assert patients == [f"phantom{i:03d}" for i in range(1, 8)]  # each patient once, in order
    volumes = [v for v, _ in groupby(re.sub(r"_slice_\d+$", "", n) for n in names)]
    assert volumes == [f"phantom{i:03d}_frame0{f}" for i in range(1, 8) for f in (1, 2)]
    orders = [[int(n.rsplit("_", 1)[1]) for n in names if n.startswith(v + "_")] for v in volumes]
    assert all(sorted(o) == list(range(len(o))) and 8 <= len(o) <= 12 for o in orders)
    assert any(o != sorted(o) for o in orders)  # shuffled within a volume, like ACDC's list
    assert lines(phantom / "val.list") == ["phantom008_frame01", "phantom008_frame02"]
    assert lines(phantom / "test.list") == [f"phantom{i:03d}_frame0{f}" for i in (9, 10) for f in (1, 2)]


def test_h5_layout_and_metadata(phantom):
    meta = json.loads((phantom / "mona.json").read_text())
    assert meta["classes"] == ["background", "RV", "Myo", "LV"] and meta["num_classes"] == 4
    assert [meta[k] for k in ("name", "modality", "normalisation", "slicing_axis")] == ["phantom", "MRI", "minmax", 0]
    assert len(meta["cases"]) == 2 * PATIENTS
    image, label = read(phantom / "data" / "slices" / f"{lines(phantom / 'train_slices.list')[0]}.h5")
    assert image.shape == label.shape == (96, 96) and image.dtype == np.float32 and label.dtype == np.uint8
    for case in lines(phantom / "val.list") + lines(phantom / "test.list"):
        image, label = read(phantom / "data" / f"{case}.h5")
        assert image.ndim == 3 and image.shape == label.shape and image.dtype == np.float32 and label.dtype == np.uint8
        assert meta["cases"][case]["original_shape"] == list(image.shape)
        assert len(meta["cases"][case]["spacing"]) == 3 and min(meta["cases"][case]["spacing"]) > 0


def test_values_and_class_balance(phantom):
    slices, volumes = all_arrays(phantom)
    images = np.concatenate([i.ravel() for i, _ in slices + volumes])
    labels = np.concatenate([label.ravel() for _, label in slices + volumes])
    assert images.min() >= 0 and images.max() <= 1
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert 0.9 < np.mean(labels == 0) < 0.98
    # not thresholdable: LV blood is not brighter than every background pixel
    assert np.mean(images[labels == 0] > np.median(images[labels == 3])) > 0.005


def test_anatomy_of_each_test_volume(phantom):
    _, volumes = all_arrays(phantom)
    for _, label in volumes:
        assert {1, 2, 3} <= set(np.unique(label))  # every foreground class present
        rv_per_slice = (label == 1).any(axis=(1, 2))
        assert rv_per_slice.any() and not rv_per_slice[-1]  # RV gone at the apex
        lv_area = (label == 3).sum(axis=(1, 2))
        assert lv_area[1] > lv_area[-2]  # the LV cavity shrinks towards the apex


def test_deterministic_by_seed(tmp_path):
    kw = dict(patients=3, slices=(4, 5), size=(48, 48))
    a, b, c = (write_phantom(tmp_path / n, seed=s, **kw) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    assert lines(a / "train_slices.list") == lines(b / "train_slices.list")
    for case in lines(a / "test.list"):
        for x, y in zip(read(a / "data" / f"{case}.h5"), read(b / "data" / f"{case}.h5")):
            np.testing.assert_array_equal(x, y)
    case = lines(a / "test.list")[0]
    assert not np.array_equal(read(a / "data" / f"{case}.h5")[0], read(c / "data" / f"{case}.h5")[0])


def test_refuses_non_empty_folder_and_accepts_empty_one(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(MonaError, match="busy"):
        write_phantom(busy, patients=3, slices=(4, 4), size=(32, 32))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom(empty, patients=3, slices=(4, 4), size=(32, 32))
    assert (empty / "mona.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no temporary folder left


def test_variation_spreads_patients_apart(tmp_path):
    """`variation=1` (the demo's phantom) spreads heart sizes and intensities of the patients wider,
    and is recorded in mona.json; out-of-range values are refused."""
    kw = dict(patients=10, slices=(4, 4), size=(48, 48))
    spreads = []
    for name, variation in (("calm", 0.0), ("varied", 1.0)):
        root = write_phantom(tmp_path / name, variation=variation, **kw)
        assert json.loads((root / "mona.json").read_text())["phantom"]["variation"] == variation
        volumes = [read(root / "data" / f"{c}.h5") for c in lines(root / "val.list") + lines(root / "test.list")]
        slices = all_arrays(root)[0]
        by_patient = {}
        for n, (image, label) in zip(lines(root / "train_slices.list"), slices):
            by_patient.setdefault(n[:11], []).append((image, label))
        patients = list(by_patient.values()) + [[v] for v in volumes]
        lv_area = [np.mean([np.mean(label == 3) for _, label in p]) for p in patients]
        lv_level = [np.mean(np.concatenate([image[label == 3] for image, label in p])) for p in patients]
        spreads.append((np.std(lv_area) / np.mean(lv_area), np.std(lv_level)))
    assert spreads[1][0] > 1.5 * spreads[0][0] and spreads[1][1] > 1.5 * spreads[0][1]
    with pytest.raises(MonaError, match="variation"):
        write_phantom(tmp_path / "bad", variation=1.5, **kw)


def test_held_out_sets_the_val_and_test_patients(tmp_path):
    """`held_out=(val, test)` takes that many of the last patients for val and test (the demo's larger
    evaluation sets) and leaves the training patients as they were; too many held out is refused."""
    kw = dict(slices=(3, 3), size=(32, 32), seed=2)
    plain = write_phantom(tmp_path / "plain", patients=5, **kw)  # 3 train, 1 val, 1 test
    wide = write_phantom(tmp_path / "wide", patients=8, held_out=(2, 3), **kw)
    assert lines(wide / "train_slices.list") == lines(plain / "train_slices.list")
    assert [c[:10] for c in lines(wide / "val.list")] == ["phantom004"] * 2 + ["phantom005"] * 2
    assert len(lines(wide / "test.list")) == 3 * 2
    assert json.loads((wide / "mona.json").read_text())["phantom"]["held_out"] == [2, 3]
    with pytest.raises(MonaError, match="leave 0 to train"):
        write_phantom(tmp_path / "bad", patients=5, held_out=(2, 3), **kw)
