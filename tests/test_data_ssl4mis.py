"""The SSL4MIS reader: labeled budgets (real ACDC lists), the phantom, the slice store, the sampler,
and bad inputs, each a MonaError naming the file."""

import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from mona.augment.weak import resize_images
from mona.data.phantom import write_phantom
from mona.data.prepare import prepare_folder
from mona.data.ssl4mis import (
    dataset_info,
    load_train_data,
    load_volumes,
    patient_of,
    read_h5,
    read_list,
    sample_indices,
    split_budget,
    volume_of,
)
from mona.errors import MonaError

ACDC = Path(__file__).parents[1].parent / "shared/data/ACDC"
needs_acdc = pytest.mark.skipif(not (ACDC / "train_slices.list").is_file(), reason="shared ACDC data is absent")


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    # 5 patients: 3 train / 1 val / 1 test
    return write_phantom(tmp_path_factory.mktemp("ssl4mis") / "ds", patients=5, size=(32, 48), slices=(4, 5))


@pytest.fixture
def copy(phantom, tmp_path):
    """A private copy of the phantom to break."""
    return Path(shutil.copytree(phantom, tmp_path / "ds"))


def test_names():
    assert volume_of("patient099_frame01_slice_15") == "patient099_frame01"
    assert patient_of("patient099_frame01_slice_15") == "patient099"
    assert patient_of("patient099_frame02") == "patient099"


@needs_acdc
@pytest.mark.parametrize("labeled, count, first", [
    ("1", 32, ["patient099"]), ("3", 68, ["patient099", "patient038", "patient050"]),
    ("7", 136, ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021", "patient049"]),
])
def test_acdc_budgets(labeled, count, first):
    names = read_list(ACDC / "train_slices.list")
    labeled_idx, unlabeled_idx = split_budget(names, labeled)
    assert len(labeled_idx) == count
    assert len(labeled_idx) + len(unlabeled_idx) == len(names) == 1312
    assert set(labeled_idx).isdisjoint(unlabeled_idx)
    patients = []
    for i in labeled_idx:
        if patient_of(names[i]) not in patients:
            patients.append(patient_of(names[i]))
    assert patients == first
    assert not {patient_of(names[i]) for i in unlabeled_idx} & set(first)  # a patient is labeled whole


@needs_acdc
def test_acdc_all_and_too_many():
    names = read_list(ACDC / "train_slices.list")
    labeled_idx, unlabeled_idx = split_budget(names, "all")
    assert labeled_idx == list(range(len(names))) and unlabeled_idx == []
    with pytest.raises(MonaError, match="71"):
        split_budget(names, "71")


def test_budget_on_a_toy_list():
    names = ["b_frame01_slice_0", "b_frame02_slice_1", "a_frame01_slice_0", "b_frame01_slice_2", "c_frame01_slice_0"]
    assert split_budget(names, "1") == ([0, 1, 3], [2, 4])
    assert split_budget(names, "2") == ([0, 1, 2, 3], [4])


def test_budget_counts_patients_with_labels():
    names = ["b_slice_1", "b_slice_2", "u_slice_1", "a_slice_1", "c_slice_1"]
    has_label = [True, True, False, True, True]
    assert split_budget(names, "1", has_label) == ([0, 1], [2, 3, 4])
    assert split_budget(names, "2", has_label) == ([0, 1, 3], [2, 4])
    assert split_budget(names, "all", has_label) == ([0, 1, 3, 4], [2])  # every slice with a label
    with pytest.raises(MonaError, match="asked for 4 labeled patients but the training list has 3 patients with"):
        split_budget(names, "4", has_label)
    # a patient with a labeled and an unlabeled frame: only the labeled slices are in the budget
    frames = ["p1_frame01_slice_1", "p1_frame02_slice_1", "p2_frame01_slice_1"]
    assert split_budget(frames, "1", [True, False, True]) == ([0], [1, 2])
    with pytest.raises(MonaError, match="no labeled slices"):
        split_budget(["u_slice_1"], "all", [False])


@pytest.fixture(scope="module")
def partly_labeled(tmp_path_factory):
    """A prepared own folder: 3 masks (2 training patients, 1 val, no test) and 3 scans without."""
    tmp = tmp_path_factory.mktemp("partly")
    rng = np.random.default_rng(0)
    for k in range(6):
        (tmp / "scans").mkdir(exist_ok=True)
        (tmp / "masks").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(rng.integers(0, 500, (10, 8, 3)).astype(np.int16), np.diag([1, 1, 3.0, 1])),
                 tmp / "scans" / f"case{k}.nii.gz")
        if k < 3:
            nib.save(nib.Nifti1Image(rng.integers(0, 3, (10, 8, 3)).astype(np.uint8), np.diag([1, 1, 3.0, 1])),
                     tmp / "masks" / f"case{k}.nii.gz")
    return prepare_folder(tmp / "scans", tmp / "masks", tmp / "ds", seed=0, test_fraction=0)


def slices_of(cases):
    return [f"{case}_slice_{i}" for case in cases for i in (1, 2, 3)]


def test_partly_labeled_streams(partly_labeled):
    info = dataset_info(partly_labeled)
    train, unlabeled = info.metadata["splits"]["train"], info.metadata["unlabeled_cases"]
    assert (len(train), unlabeled) == (2, ["case3", "case4", "case5"])
    everything = load_train_data(info, "all", 8)
    assert everything.labeled.names == slices_of(train) and everything.labeled.labels.shape == (6, 8, 8)
    assert everything.unlabeled.names == slices_of(unlabeled) and everything.unlabeled.labels is None
    one = load_train_data(info, "1", 8)
    assert one.labeled.names == slices_of(train[:1])
    assert one.unlabeled.names == slices_of(train[1:] + unlabeled)  # labels hidden, list order
    assert one.unlabeled.images.shape == (12, 1, 8, 8)
    with h5py.File(partly_labeled / "data" / "slices" / "case5_slice_2.h5") as f:
        assert "label" not in f  # the store row is that image, resized (8 x 10 -> 8 x 8)
        expected = resize_images(torch.from_numpy(f["image"][()])[None, None], (8, 8))[0]
    assert torch.equal(one.unlabeled.images[-2], expected)
    assert set(one.unlabeled.batch(torch.tensor([0, 11]), torch.device("cpu"), with_label=False)) == {"image"}
    with pytest.raises(ValueError, match="no labels"):
        one.unlabeled.batch(torch.tensor([0]), torch.device("cpu"))
    with pytest.raises(MonaError, match="asked for 3 labeled patients but the training list has 2 patients"):
        load_train_data(info, "3", 8)


def test_no_test_split_is_explained(partly_labeled):
    info = dataset_info(partly_labeled)
    with pytest.raises(MonaError, match="this dataset has no test cases") as error:
        load_volumes(info, "test")
    assert error.value.path == str(partly_labeled / "test.list")
    [val] = load_volumes(info, "val")
    assert val.name == info.metadata["splits"]["val"][0] and val.label.shape == val.image.shape


def test_phantom_info(phantom):
    info = dataset_info(phantom)
    assert info.num_classes == 4 and info.class_names == ["background", "RV", "Myo", "LV"]
    assert set(info.spacing) == {f"phantom00{p}_frame0{f}" for p in range(1, 6) for f in (1, 2)}
    assert all(len(s) == 3 for s in info.spacing.values())


def test_phantom_train_data_and_store_shapes(phantom):
    info = dataset_info(phantom)
    names = read_list(phantom / "train_slices.list")
    data = load_train_data(info, "1", 32)
    assert all(patient_of(n) == "phantom001" for n in data.labeled.names)
    assert all(patient_of(n) != "phantom001" for n in data.unlabeled.names)
    assert len(data.labeled.names) + len(data.unlabeled.names) == len(names)
    n = len(data.labeled.names)
    assert data.labeled.images.shape == (n, 1, 32, 32) and data.labeled.images.dtype == torch.float32
    assert data.labeled.labels.shape == (n, 32, 32) and data.labeled.labels.dtype == torch.uint8
    assert set(data.labeled.labels.unique().tolist()) <= {0, 1, 2, 3}
    assert 0.0 <= data.labeled.images.min() and data.labeled.images.max() <= 1.0
    # the store row matches the file, resized (48 wide -> 32)
    with h5py.File(phantom / "data" / "slices" / f"{data.labeled.names[0]}.h5") as f:
        raw = f["label"][()]
    assert raw.shape == (32, 48)
    assert set(np.unique(raw)) == set(data.labeled.labels[0].unique().tolist())
    everything = load_train_data(info, "all", 16)
    assert everything.unlabeled is None and everything.labeled.images.shape == (len(names), 1, 16, 16)


def test_store_batch(phantom):
    store = load_train_data(dataset_info(phantom), "all", 32).labeled
    batch = store.batch(torch.tensor([5, 0, 5]), torch.device("cpu"))
    assert batch["image"].shape == (3, 1, 32, 32) and batch["label"].dtype == torch.long
    assert torch.equal(batch["image"][0], store.images[5]) and torch.equal(batch["label"][1], store.labels[0].long())
    assert set(store.batch(torch.tensor([1]), torch.device("cpu"), with_label=False)) == {"image"}


def test_volumes(phantom):
    info = dataset_info(phantom)
    volumes = load_volumes(info, "val")
    assert [v.name for v in volumes] == ["phantom004_frame01", "phantom004_frame02"]
    for v in volumes:
        assert v.image.ndim == 3 and v.image.shape[1:] == (32, 48) and v.label.shape == v.image.shape
        assert v.spacing == info.spacing[v.name]


def test_sample_indices_reproducible():
    a = sample_indices(50, 8, torch.Generator().manual_seed(7))
    b = sample_indices(50, 8, torch.Generator().manual_seed(7))
    c = sample_indices(50, 8, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 8 and a.min() >= 0 and a.max() < 50  # distinct when possible
    small = sample_indices(3, 8, torch.Generator().manual_seed(0))
    assert small.shape == (8,) and small.min() >= 0 and small.max() < 3


# --- bad inputs: every one a MonaError naming the file ---------------------------------------

def first_slice(root):
    return root / "data" / "slices" / f"{read_list(root / 'train_slices.list')[0]}.h5"


def rewrite(path, image, label):
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


def check_error(root, path, match):
    with pytest.raises(MonaError, match=match) as info:
        load_train_data(dataset_info(root), "1", 32)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_missing_h5_named_in_list(copy):
    with open(copy / "train_slices.list", "a") as f:
        f.write("ghost_frame01_slice_0\n")
    check_error(copy, copy / "data" / "slices" / "ghost_frame01_slice_0.h5", "missing")


def test_corrupt_h5(copy):
    path = first_slice(copy)
    path.write_bytes(b"this is not an HDF5 file at all" * 10)
    check_error(copy, path, "cannot read")


def test_label_out_of_range(copy):
    path = first_slice(copy)
    image, label = read_h5(path, 2, 4)
    label[0, 0] = 4
    rewrite(path, image, label)
    check_error(copy, path, "outside 0..3")


def test_nan_in_image(copy):
    path = first_slice(copy)
    image, label = read_h5(path, 2, 4)
    image[3, 3] = np.nan
    rewrite(path, image, label)
    check_error(copy, path, "NaN")


def test_shape_mismatch(copy):
    path = first_slice(copy)
    image, label = read_h5(path, 2, 4)
    rewrite(path, image, label[:-1])
    check_error(copy, path, "shape")


def test_missing_label_dataset(copy):
    path = first_slice(copy)
    image, _ = read_h5(path, 2, 4)
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
    check_error(copy, path, "lacks")


def test_volume_with_wrong_dimensions(copy):
    path = copy / "data" / "phantom004_frame01.h5"
    image, label = read_h5(path, 3, 4)
    rewrite(path, image[0], label[0])
    with pytest.raises(MonaError, match="dimensions") as info:
        load_volumes(dataset_info(copy), "val")
    assert info.value.path == str(path)


@pytest.mark.parametrize("name", ["train_slices.list", "val.list"])
def test_missing_list_file(copy, name):
    (copy / name).unlink()
    with pytest.raises(MonaError, match="list file is missing") as info:
        if name == "val.list":
            load_volumes(dataset_info(copy), "val")
        else:
            load_train_data(dataset_info(copy), "1", 32)
    assert info.value.path == str(copy / name)


def test_empty_list_and_missing_folder(copy, tmp_path):
    (copy / "test.list").write_text("\n\n")
    with pytest.raises(MonaError, match="empty") as info:
        load_volumes(dataset_info(copy), "test")
    assert info.value.path == str(copy / "test.list")
    with pytest.raises(MonaError, match="does not exist") as info:
        dataset_info(tmp_path / "nowhere")
    assert info.value.path == str(tmp_path / "nowhere")


def test_bad_metadata_json(copy):
    (copy / "mona.json").write_text("{not json")
    with pytest.raises(MonaError, match="JSON") as info:
        dataset_info(copy)
    assert info.value.path == str(copy / "mona.json")


def test_uint8_image_read_as_fraction_of_255(copy):
    path = first_slice(copy)
    image, label = read_h5(path, 2, 4)
    quantised = np.round(image.clip(0, 1) * 255).astype(np.uint8)
    rewrite(path, quantised, label)
    again, _ = read_h5(path, 2, 4)
    assert again.dtype == np.float32
    np.testing.assert_allclose(again, quantised / 255, atol=1e-7)
    assert np.abs(again - image.clip(0, 1)).max() <= 0.5 / 255 + 1e-6
