"""Write the built-in synthetic cardiac phantom in the SSL4MIS layout (see `mona.data.phantom`),
or as raw scans with masks for a few patients: a stand-in for your own data.

  mona synth OUT [--patients 20] [--seed 0] [--size H W]
  mona synth OUT --scans-with-masks 3     # OUT/scans/*.nii.gz, OUT/masks/*.nii.gz for 3 patients

OUT must be new or empty; it is built beside itself and renamed into place. With
--scans-with-masks the NIfTI scans have anisotropic voxels (affine diagonal in the phantom's
spacing) and each patient's two frames share the patient's prefix, as ACDC's do; feed them to
`mona prepare folder --images OUT/scans --masks OUT/masks PREPARED` (docs/own-data.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from mona.data.phantom import split_counts, write_phantom
from mona.data.ssl4mis import dataset_info, patient_of, read_h5, read_list, volume_of
from mona.errors import MonaError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="new (or empty) dataset folder")
    parser.add_argument("--patients", type=int, default=20, help="patients, two frames each (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"),
                        help="in-plane size in pixels (default 96 96)")
    parser.add_argument("--scans-with-masks", type=int, metavar="N",
                        help="write raw NIfTI scans (OUT/scans) and masks of the first N patients (OUT/masks)")


def phantom_volumes(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every case of a phantom dataset as (image, label) volumes (D, H, W); training cases are
    stacked back from their slices."""
    info = dataset_info(root)
    slices: dict[str, list[tuple[int, str]]] = {}
    for name in read_list(root / "train_slices.list"):
        slices.setdefault(volume_of(name), []).append((int(name.rsplit("_", 1)[1]), name))
    volumes = {}
    for case, members in slices.items():
        pairs = [read_h5(root / "data" / "slices" / f"{name}.h5", 2, info.num_classes) for _, name in sorted(members)]
        volumes[case] = (np.stack([image for image, _ in pairs]), np.stack([label for _, label in pairs]))
    for split in ("val", "test"):
        for case in read_list(root / f"{split}.list"):
            volumes[case] = read_h5(root / "data" / f"{case}.h5", 3, info.num_classes)
    return volumes


def write_scan_folder(out: Path, patients: int, with_masks: int, seed: int, size: tuple[int, int]) -> Path:
    """The phantom as OUT/scans/<case>.nii.gz and OUT/masks/<case>.nii.gz for the first `with_masks`
    patients (in case order), written beside `out` and renamed into place."""
    if not 0 <= with_masks <= patients:
        raise MonaError(f"--scans-with-masks must be between 0 and --patients ({patients}), not {with_masks}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MonaError("already exists and is not empty; choose a new folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        root = write_phantom(tmp / "phantom", patients=patients, seed=seed, size=size)
        spacing = dataset_info(root).spacing
        volumes = phantom_volumes(root)
        labeled = sorted({patient_of(case) for case in volumes})[:with_masks]
        for folder in ("scans", "masks"):
            (tmp / folder).mkdir()
        for case, (image, label) in sorted(volumes.items()):
            affine = np.diag([*spacing[case][::-1], 1.0])  # (D, H, W) spacing -> NIfTI (x, y, z)
            nib.save(nib.Nifti1Image(image.transpose(2, 1, 0).astype(np.float32), affine),
                     tmp / "scans" / f"{case}.nii.gz")
            if patient_of(case) in labeled:
                nib.save(nib.Nifti1Image(label.transpose(2, 1, 0).astype(np.uint8), affine),
                         tmp / "masks" / f"{case}.nii.gz")
        shutil.rmtree(root)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def run(args: argparse.Namespace) -> int:
    """Write the phantom and print one line: what was written, and where."""
    if args.scans_with_masks is not None:
        out = write_scan_folder(args.out, args.patients, args.scans_with_masks, args.seed, tuple(args.size))
        scans, masks = len(list((out / "scans").iterdir())), len(list((out / "masks").iterdir()))
        print(f"phantom scans: {scans} in {out / 'scans'}, masks for {masks} of them ({args.scans_with_masks} "
              f"patients) in {out / 'masks'}")
        return 0
    out = write_phantom(args.out, patients=args.patients, seed=args.seed, size=tuple(args.size))
    train, val, test = split_counts(args.patients)
    slices = len((out / "train_slices.list").read_text().split())
    print(f"phantom: {train} train / {val} val / {test} test patients, {slices} training slices "
          f"of {args.size[0]}x{args.size[1]} -> {out}")
    return 0
