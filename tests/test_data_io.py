"""Volume I/O: NIfTI and h5 round trips, axis order, atomic writes and every bad input."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from dicom_series import INTERCEPT, PIXEL_SPACING, SLICE_STEP, SLOPE, expected_affine, write_series
from mona.data.io import Volume, check_labels, dicom_affine, read_dicom_series, read_volume, write_label_volume
from mona.errors import MonaError


def read_label_volume(path):
    """The uint8 (D, H, W) label array of a file, as `mona evaluate --pred` reads truths."""
    return read_volume(path, labels_only=True).label


ZOOMS_XYZ = (0.7, 0.8, 3.0)


def oblique_affine() -> np.ndarray:
    """A rotated, translated affine with anisotropic zooms ZOOMS_XYZ."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(ZOOMS_XYZ)
    affine[:3, 3] = (-12.5, 40.0, 7.25)
    return affine


def write_nifti(path, data_xyz, affine=None):
    nib.save(nib.Nifti1Image(data_xyz, oblique_affine() if affine is None else affine), path)
    return path


def write_h5(path, **datasets):
    attrs = datasets.pop("attrs", {})
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
        f.attrs.update(attrs)
    return path


def labels_dhw(shape=(4, 6, 5), seed=0):
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(np.uint8)


def test_nifti_is_read_as_zyx_with_spacing_and_geometry(tmp_path):
    data_xyz = np.random.default_rng(0).random((5, 6, 4)).astype(np.float32)
    vol = read_volume(write_nifti(tmp_path / "img.nii.gz", data_xyz))
    assert vol.image.shape == (4, 6, 5) and vol.image.dtype == np.float32 and vol.label is None
    np.testing.assert_array_equal(vol.image, np.transpose(data_xyz, (2, 1, 0)))
    assert vol.spacing == pytest.approx(ZOOMS_XYZ[::-1])
    np.testing.assert_allclose(vol.affine, oblique_affine(), atol=1e-5)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_nifti_label_round_trip_keeps_affine_and_zooms(tmp_path, ext):
    reference = read_volume(write_nifti(tmp_path / f"img{ext}", np.zeros((5, 6, 4), np.float32)))
    labels = labels_dhw()
    out = tmp_path / "sub" / f"pred{ext}"
    write_label_volume(out, labels, reference)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, oblique_affine(), atol=1e-5)
    assert img.header.get_zooms() == pytest.approx(ZOOMS_XYZ)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.transpose(labels, (2, 1, 0)))
    np.testing.assert_array_equal(read_label_volume(out), labels)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left


def test_nifti_without_reference_geometry_uses_spacing(tmp_path):
    labels = labels_dhw()
    write_label_volume(tmp_path / "a.nii.gz", labels, Volume(spacing=(3.0, 0.8, 0.7)))
    write_label_volume(tmp_path / "b.nii.gz", labels)
    assert read_volume(tmp_path / "a.nii.gz", labels_only=True).spacing == pytest.approx((3.0, 0.8, 0.7))
    np.testing.assert_array_equal(nib.load(tmp_path / "b.nii.gz").affine, np.eye(4))


def test_h5_round_trip_and_overwrite(tmp_path):
    out = tmp_path / "pred.h5"
    write_label_volume(out, labels_dhw(seed=1), Volume(spacing=(2.0, 1.0, 1.5)))
    labels = labels_dhw(seed=2)
    write_label_volume(out, labels, Volume(spacing=(2.0, 1.0, 1.5)))
    vol = read_volume(out)
    assert vol.image is None and vol.label.dtype == np.uint8 and vol.spacing == (2.0, 1.0, 1.5)
    np.testing.assert_array_equal(vol.label, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["pred.h5"]


def test_h5_with_image_label_and_without_spacing(tmp_path):
    image = np.random.default_rng(0).random((4, 6, 5))
    vol = read_volume(write_h5(tmp_path / "case.h5", image=image, label=labels_dhw()))
    assert vol.image.dtype == np.float32 and vol.spacing is None and vol.affine is None
    np.testing.assert_allclose(vol.image, image, rtol=1e-6)
    assert read_volume(tmp_path / "case.h5", labels_only=True).image is None


def test_float_labels_are_accepted_when_whole(tmp_path):
    labels = labels_dhw()
    path = write_nifti(tmp_path / "seg.nii.gz", np.transpose(labels, (2, 1, 0)).astype(np.float32))
    out = read_label_volume(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def test_writer_rejects_a_shape_that_differs_from_the_reference(tmp_path):
    with pytest.raises(MonaError, match="pred.h5"):
        write_label_volume(tmp_path / "pred.h5", labels_dhw(), Volume(label=labels_dhw((4, 6, 6))))
    assert not any(tmp_path.iterdir())


def write_bytes(path, data):
    path.write_bytes(data)
    return path


def truncated_nifti(tmp_path):
    noise = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)  # does not compress
    whole = write_nifti(tmp_path / "whole.nii.gz", noise).read_bytes()
    return write_bytes(tmp_path / "truncated.nii.gz", whole[: len(whole) // 2])


NAN_IMAGE = np.where(np.arange(60).reshape(3, 4, 5) == 17, np.nan, 0.0).astype(np.float32)

# Each bad input: a maker writing the file under tmp_path, and the reader that must reject it.
BAD_INPUTS = {
    "missing": (lambda d: d / "absent.h5", read_volume),
    "not_h5": (lambda d: write_bytes(d / "garbage.h5", b"not an hdf5 file" * 8), read_volume),
    "truncated_nifti": (truncated_nifti, read_volume),
    "no_keys": (lambda d: write_h5(d / "nokeys.h5", other=np.zeros((2, 2, 2))), read_volume),
    "no_label": (lambda d: write_h5(d / "nolabel.h5", image=np.zeros((2, 2, 2))), read_label_volume),
    "nifti_4d": (lambda d: write_nifti(d / "fourd.nii.gz", np.zeros((3, 3, 3, 2), np.float32)), read_volume),
    "h5_2d": (lambda d: write_h5(d / "slice.h5", image=np.zeros((4, 4))), read_volume),
    "nan_h5": (lambda d: write_h5(d / "nan.h5", image=NAN_IMAGE), read_volume),
    "nan_nifti": (lambda d: write_nifti(d / "nan.nii", NAN_IMAGE), read_volume),
    "fractional_labels": (lambda d: write_h5(d / "frac.h5", label=np.full((2, 2, 2), 0.5)), read_volume),
    "negative_labels": (lambda d: write_h5(d / "neg.h5", label=np.full((2, 2, 2), -1)), read_label_volume),
    "bad_spacing": (lambda d: write_h5(d / "sp.h5", label=np.zeros((2, 2, 2)), attrs={"spacing": [1.0, 0.0]}),
                    read_volume),
    "mismatched_keys": (lambda d: write_h5(d / "mis.h5", image=np.zeros((2, 2, 2)), label=np.zeros((2, 2, 3))),
                        read_volume),
    "wrong_extension": (lambda d: write_bytes(d / "vol.npy", b"x"), read_volume),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_mona_error_naming_the_file(tmp_path, case):
    make, reader = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(MonaError) as info:
        reader(path)
    assert path.name in str(info.value)


def test_check_labels(tmp_path):
    labels = labels_dhw()  # values 0..3
    check_labels(labels, 4, tmp_path / "ok.h5")
    with pytest.raises(MonaError, match=r"few\.h5.*0\.\.2.*found 0\.\.3"):
        check_labels(labels, 3, tmp_path / "few.h5")
    with pytest.raises(MonaError, match="neg.nii"):
        check_labels(labels.astype(np.int16) - 1, 4, tmp_path / "neg.nii")


# DICOM series (#47.5): written here with pydicom (tests/dicom_series.py), read as one scan.


def dicom_scan(seed: int = 0, shape=(5, 4, 3)) -> np.ndarray:
    """Stored int16 values (columns, rows, slices): non-square slices, so a transpose cannot pass."""
    return np.random.default_rng(seed).integers(-50, 300, shape).astype(np.int16)


def test_a_dicom_series_is_one_scan_in_the_geometry_dicom_defines(tmp_path):
    stored = dicom_scan()
    folder = write_series(tmp_path / "case01", stored)
    volume = read_volume(folder)
    assert volume.image.shape == (3, 4, 5)  # (slices, rows, columns): io order of NIfTI (x, y, z) = (5, 4, 3)
    np.testing.assert_array_equal(volume.image, (stored * SLOPE + INTERCEPT).transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, expected_affine(), atol=1e-6)
    np.testing.assert_allclose(dicom_affine(folder), read_dicom_series(folder).affine, atol=1e-5)  # from headers
    np.testing.assert_allclose(volume.spacing, (SLICE_STEP, *PIXEL_SPACING), atol=1e-6)
    write_label_volume(tmp_path / "mask.nii.gz", (volume.image > 100).astype(np.uint8), volume)
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == (5, 4, 3) and nib.aff2axcodes(mask.affine) == nib.aff2axcodes(expected_affine())
    np.testing.assert_allclose(mask.affine, expected_affine(), atol=1e-5)
    np.testing.assert_allclose(mask.get_qform(), expected_affine(), atol=1e-5)  # both forms, scanner coordinates
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (1, 1)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (stored * SLOPE + INTERCEPT > 100).astype(np.uint8))


def test_a_dicom_series_reads_as_simpleitk_reads_it(tmp_path):
    """The reference reader, where it is installed (not a dependency): same voxels, same affine."""
    sitk = pytest.importorskip("SimpleITK")
    folder = write_series(tmp_path / "case01", dicom_scan())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "sitk.nii.gz"))
    reference = nib.load(tmp_path / "sitk.nii.gz")
    ours = read_dicom_series(folder)
    np.testing.assert_array_equal(ours.get_fdata(), reference.get_fdata())
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-5)


def test_one_dicom_file_names_its_folder(tmp_path):
    folder = write_series(tmp_path / "case01", dicom_scan())
    with pytest.raises(MonaError) as info:
        read_volume(folder / "IM0002.dcm")
    assert str(info.value) == (f"{folder / 'IM0002.dcm'}: a DICOM file holds one slice: give the folder that holds "
                               "its series")


def test_what_is_not_one_3d_series_is_refused_naming_the_file(tmp_path):
    two = write_series(tmp_path / "two", dicom_scan())
    write_series(tmp_path / "other", dicom_scan(1))
    (tmp_path / "other" / "IM0002.dcm").rename(two / "X.dcm")
    gap = write_series(tmp_path / "gap", dicom_scan(shape=(5, 4, 4)))
    (gap / "IM0002.dcm").unlink()
    broken = write_series(tmp_path / "broken", dicom_scan())
    (broken / "IM0002.dcm").write_bytes(b"not a DICOM file")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in (
        (two, f"{two}: holds 2 DICOM series (SeriesInstanceUID): put each series in a folder of its own"),
        (gap, f"{gap}: its slices are unevenly spaced (2.5 to 5 mm apart): a slice missing?"),
        (empty, f"{empty}: no DICOM files (.dcm, or files marked DICM) in this folder"),
    ):
        with pytest.raises(MonaError) as info:
            read_volume(folder)
        assert str(info.value) == message
    with pytest.raises(MonaError) as info:
        read_volume(broken)
    assert str(info.value).startswith(f"{broken / 'IM0002.dcm'}: cannot read as DICOM (InvalidDicomError: ")
