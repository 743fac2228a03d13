"""Geometry oracle for `Predictor.segment` / `predict_file`: the network is replaced by a
deterministic pixel-wise function of normalised intensity and in-slice position, so the mask
it must give is known voxel for voxel. Scans with oblique, anisotropic, flipped and permuted
affines are prepared with `mona prepare folder` for each slicing axis; the expected mask is
found through world coordinates (raw affine, and the h5 affine prepare records), not through
the code under test. Round trips check that the network input predict builds from a raw NIfTI
is the array prepare wrote for it, for each normalisation prepare can choose."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dicom_series import INTERCEPT, SLOPE, expected_affine, write_series
from mona.data.prepare import prepare_folder
from mona.evaluation.predict import Predictor, find_inputs, predict_file, preprocessing_from_metadata

SIZE = 10  # a cube of SIZE voxels: every slice is SIZE x SIZE, the network size, so nothing is resized
CLASSES = 3
BANDS = np.array([0.0, 150.0, 250.0])  # raw intensity per band; the window [0, 300] maps them to 0, 0.5, 0.83


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(4)
    matrix[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
    return matrix


AFFINES = {
    "oblique": rotation(2, 25) @ rotation(0, 10) @ np.diag([0.7, 1.1, 3.0, 1.0]) + np.array(
        [[0, 0, 0, 12.0], [0, 0, 0, -4.0], [0, 0, 0, 30.0], [0, 0, 0, 0]]),
    "flipped": np.array([[-0.9, 0, 0, 40.0], [0, 1.3, 0, -8.0], [0, 0, -2.5, 15.0], [0, 0, 0, 1.0]]),
    "permuted": np.array([[0, 0, -2.0, 5.0], [1.2, 0, 0, 1.0], [0, -0.8, 0, -3.0], [0, 0, 0, 1.0]]),
}


def oracle_labels(image: torch.Tensor) -> torch.Tensor:
    """Class of each pixel of (..., H, W) normalised images: its intensity band, shifted by
    which half of the rows and of the columns it lies in (so a flip or transpose changes it)."""
    band = (image * 3).floor().clamp(0, 2).long()
    rows = (torch.arange(image.shape[-2]) >= image.shape[-2] // 2).long()[:, None]
    cols = (torch.arange(image.shape[-1]) >= image.shape[-1] // 2).long()[None, :]
    return (band + rows + 2 * cols) % CLASSES


class Oracle(torch.nn.Module):
    """A stand-in network: logits that pick `oracle_labels`; it keeps every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        self.seen.append(x.detach().clone())
        return SimpleNamespace(logits=F.one_hot(oracle_labels(x[:, 0]), CLASSES).permute(0, 3, 1, 2).float() * 10)


def scan(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A raw int16 scan of random bands and a random mask (its values only decide the classes)."""
    rng = np.random.default_rng(seed)
    return BANDS[rng.integers(0, 3, (SIZE,) * 3)].astype(np.int16), rng.integers(0, 3, (SIZE,) * 3).astype(np.uint8)


def write_raw(root: Path, affine: np.ndarray, cases: int = 2) -> dict[str, np.ndarray]:
    arrays = {}
    for k in range(cases):
        image, mask = scan(k)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"case{k}_0000.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"case{k}.nii.gz")
        arrays[f"case{k}"] = image
    return arrays


def predictor_for(prepared: Path) -> Predictor:
    meta = json.loads((prepared / "mona.json").read_text())
    return Predictor(Oracle(), Path("oracle"), 0, CLASSES, ["background", "a", "b"], SIZE,
                     preprocessing_from_metadata(meta), torch.device("cpu"))


def prepared_case(prepared: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """The h5 image prepare wrote and its h5 index -> world affine."""
    with h5py.File(prepared / "data" / f"{case}.h5") as f:
        image = f["image"][()]
    return image, np.array(json.loads((prepared / "mona.json").read_text())["cases"][case]["affine"])


def expected_mask(raw_affine: np.ndarray, prepared_image: np.ndarray, h5_affine: np.ndarray) -> np.ndarray:
    """The oracle's labels on the prepared volume, carried to each raw voxel through its world position."""
    labels = oracle_labels(torch.from_numpy(prepared_image)).numpy()
    ijk = np.indices((SIZE,) * 3).reshape(3, -1)
    world = raw_affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    dhw = np.rint(np.linalg.inv(h5_affine) @ world)[:3].astype(int)
    return labels[tuple(dhw)].reshape((SIZE,) * 3)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("kind", sorted(AFFINES))
def test_segment_and_predict_file_give_the_exact_mask(tmp_path, kind, axis):
    affine = AFFINES[kind]
    arrays = write_raw(tmp_path / "raw", affine)
    prepared = prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "prepared",
                              axis=axis, hu_window=(0, 300))
    predictor = predictor_for(prepared)
    prepared_image, h5_affine = prepared_case(prepared, "case0")
    expected = expected_mask(affine, prepared_image, h5_affine)
    assert len(np.unique(expected)) == CLASSES  # every class is at stake

    mask = predictor.segment(arrays["case0"], affine)
    assert mask.shape == arrays["case0"].shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
    network_input, _ = predictor.network_input(arrays["case0"], affine)
    np.testing.assert_array_equal(network_input, prepared_image)  # same orientation and normalisation as prepare

    predictor.model.seen.clear()
    result = predict_file(predictor, tmp_path / "raw" / "images" / "case0_0000.nii.gz", tmp_path / "out")
    written = nib.load(result.output)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(torch.cat(predictor.model.seen)[:, 0].numpy(), prepared_image)


def test_segment_without_affine_takes_spacing_along_the_array_axes(tmp_path):
    affine = np.diag([0.8, 0.8, 4.0, 1.0])  # slicing the coarse axis 2, in stored order
    arrays = write_raw(tmp_path / "raw", affine)
    prepared = prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "prepared",
                              hu_window=(0, 300))
    predictor = predictor_for(prepared)
    expected = expected_mask(affine, *prepared_case(prepared, "case1"))
    np.testing.assert_array_equal(predictor.segment(arrays["case1"], spacing=(0.8, 0.8, 4.0)), expected)
    np.testing.assert_array_equal(predictor.segment(arrays["case1"]), expected)  # 1 mm: the same orientation
    with pytest.raises(Exception, match="invertible"):
        predictor.segment(arrays["case1"], np.zeros((4, 4)))
    with pytest.raises(Exception, match="3D scan"):
        predictor.segment(arrays["case1"][0])


def save_scaled(path: Path, values: np.ndarray, affine: np.ndarray, extra_axis: bool = False) -> None:
    """int16 on disk with scl_slope/inter, as scanners often write; optionally as (x, y, z, 1)."""
    stored = np.round((values + 12.0) / 0.37).astype(np.int16)
    img = nib.Nifti1Image(stored[..., None] if extra_axis else stored, affine)
    img.header.set_slope_inter(0.37, -12.0)
    nib.save(img, path)


@pytest.mark.parametrize("options", [{}, {"modality": "CT"}, {"hu_window": (-50.5, 1234.567891)}],
                         ids=["percentiles", "ct-foreground-window", "fixed-window"])
def test_network_input_of_a_raw_nifti_is_what_prepare_wrote(tmp_path, options):
    """Scaled int16 storage, a trailing size-1 axis, an oblique affine and each normalisation:
    the file path of predict and prepare must give the same array, bit for bit."""
    affine = AFFINES["oblique"]
    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        values = rng.normal(300, 400, (SIZE,) * 3)
        save_scaled(tmp_path / "images" / f"case{k}.nii.gz", values, affine, extra_axis=k == 0)
        nib.save(nib.Nifti1Image((values > 300).astype(np.uint8), affine), tmp_path / "masks" / f"case{k}.nii.gz")
    prepared = prepare_folder(tmp_path / "images", tmp_path / "masks", tmp_path / "prepared", **options)
    meta = json.loads((prepared / "mona.json").read_text())
    predictor = predictor_for(prepared)
    for k in range(3):
        predictor.model.seen.clear()
        predict_file(predictor, tmp_path / "images" / f"case{k}.nii.gz", tmp_path / "out")
        prepared_image, _ = prepared_case(prepared, f"case{k}")
        np.testing.assert_array_equal(torch.cat(predictor.model.seen)[:, 0].numpy(), prepared_image,
                                      err_msg=f"case{k} with {meta['normalisation']}")


@pytest.mark.parametrize("axis", [0, 2])
def test_a_dicom_series_gets_its_mask_in_its_own_geometry(tmp_path, axis):
    """#47.5: oblique DICOM series (tests/dicom_series.py) prepared and predicted as folders: the mask
    is the NIfTI OUT/<folder>.nii.gz with the series' voxel grid (column, row, slice) and the affine
    DICOM defines for it, each voxel the oracle's label at its world position."""
    affine = expected_affine(SIZE)
    for k in range(2):
        image, mask = scan(k)
        write_series(tmp_path / "raw" / "images" / f"case{k}", ((image - INTERCEPT) / SLOPE).astype(np.int16))
        (tmp_path / "raw" / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask, affine), tmp_path / "raw" / "masks" / f"case{k}.nii.gz")
    prepared = prepare_folder(tmp_path / "raw" / "images", tmp_path / "raw" / "masks", tmp_path / "prepared",
                              axis=axis, hu_window=(0, 300))
    predictor = predictor_for(prepared)
    prepared_image, h5_affine = prepared_case(prepared, "case0")
    expected = expected_mask(affine, prepared_image, h5_affine)
    assert len(np.unique(expected)) == CLASSES

    inputs = find_inputs(tmp_path / "raw" / "images")
    assert inputs == [tmp_path / "raw" / "images" / "case0", tmp_path / "raw" / "images" / "case1"]
    assert find_inputs(inputs[0]) == [inputs[0]]  # a series folder given itself is one scan
    result = predict_file(predictor, inputs[0], tmp_path / "out")
    assert result.output == tmp_path / "out" / "case0.nii.gz"
    written = nib.load(result.output)
    assert written.shape == (SIZE,) * 3 and nib.aff2axcodes(written.affine) == nib.aff2axcodes(affine)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)
    np.testing.assert_array_equal(torch.cat(predictor.model.seen)[:, 0].numpy(), prepared_image)
    np.testing.assert_array_equal(predictor.segment_file(inputs[0]), expected)  # the Python API, the same mask
