"""Tiny DICOM series for the tests, written with pydicom, and the geometry DICOM defines for them.

An oblique series: rows and columns are not along any patient axis, the pixels are not square,
the files are named against the slice order (and one has no extension), so reading it right needs
ImageOrientationPatient, PixelSpacing and the sort by ImagePositionPatient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Direction cosines as a scanner writes them (10 decimals: a DICOM decimal string holds 16 characters).
ROW = np.round([np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0], 10)  # the direction in which the column index grows
COLUMN = np.round([-np.sin(np.pi / 6) * np.cos(0.35), np.cos(np.pi / 6) * np.cos(0.35), -np.sin(0.35)], 10)
PIXEL_SPACING = (0.7, 0.9)  # between rows, between columns (mm)
SLICE_STEP = 2.5  # mm along the normal
ORIGIN = np.array([10.25, -20.5, 30.0])  # the first slice's ImagePositionPatient (LPS mm)
SLOPE, INTERCEPT = 2.0, -100.0


def expected_affine(slices: int = 3) -> np.ndarray:
    """Voxel (column i, row j, slice k) -> RAS mm, straight from DICOM PS3.3 C.7.6.2.1.1: LPS position
    = IPP_k + i * PixelSpacing[1] * row cosine + j * PixelSpacing[0] * column cosine, and RAS is LPS
    with x and y negated."""
    normal = np.cross(ROW, COLUMN)
    lps = np.eye(4)
    lps[:3, 0] = ROW * PIXEL_SPACING[1]
    lps[:3, 1] = COLUMN * PIXEL_SPACING[0]
    lps[:3, 2] = normal * SLICE_STEP
    lps[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def slice_position(k: int) -> list[float]:
    return [round(float(v), 6) for v in ORIGIN + k * SLICE_STEP * np.cross(ROW, COLUMN)]


def write_series(folder: Path, stored: np.ndarray, series_uid: str | None = None) -> Path:
    """Write `stored` (columns, rows, slices) int16 values as one CT series in `folder`, slice k at
    `slice_position(k)`; the pixel values read back are `stored * SLOPE + INTERCEPT`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    slices = stored.shape[2]
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", folder.name
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*ROW, *COLUMN)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in slice_position(k)]
        ds.PixelSpacing = [str(v) for v in PIXEL_SPACING]
        ds.SliceThickness = str(SLICE_STEP)
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = str(SLOPE), str(INTERCEPT)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T, dtype="<i2").tobytes()  # rows of columns
        name = f"IM{slices - k:04d}" + (".dcm" if k else "")  # against the slice order; one without extension
        ds.save_as(folder / name, enforce_file_format=True)
    return folder
