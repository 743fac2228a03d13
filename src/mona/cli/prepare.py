"""Convert a raw dataset download (with the paper's splits) or your own scans, some with masks
(`folder`, `nnunet`: a seeded split), into mona's SSL4MIS layout:

  OUT/
  ├── train_slices.list   training slices, grouped by patient: labeled ones first (labeled budget =
  │                       first N patients), then those of unlabeled cases
  ├── train.list          training volumes, in the same order
  ├── val.list, test.list validation / test volumes (labeled only; no test.list when test is empty)
  ├── mona.json           classes, modality, normalisation, slicing axis, labeled and unlabeled
  │                       cases, splits and where they come from, per case spacing/affine
  └── data/
      ├── <case>.h5       every case: image float32 DxHxW in [0, 1], label uint8; attr spacing
      └── slices/<case>_slice_<i>.h5   training slices (i from 1): image HxW, label HxW
                                       (unlabeled cases: image only)

`mona prepare folder --images DIR --masks DIR OUT` takes a folder of scans and a folder of masks
for some of them; scans without a mask (and those of --unlabeled DIR) train as unlabeled data.
`mona prepare DATASET --help` shows each raw layout. Prepare prints the split it made once OUT is
complete, and the files it skipped (not NIfTI) in a folder of own scans or masks. OUT is built
beside itself and moved into place when complete; an existing non-empty OUT needs --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mona.data.prepare import acdc, folder, lits, mmwhs, nnunet

LAYOUTS = {
    "acdc": ("the official ACDC download (SSL4MIS lists: 70/10/20 patients)", """\
RAW/
├── training/
│   ├── patient001/
│   │   ├── Info.cfg                     lines 'ED: 1' and 'ES: 12' name the frames
│   │   ├── patient001_frame01.nii.gz    image (ED)
│   │   ├── patient001_frame01_gt.nii.gz label 0 bg, 1 RV, 2 Myo, 3 LV
│   │   ├── patient001_frame12.nii.gz    image (ES)
│   │   └── patient001_frame12_gt.nii.gz
│   └── ... patient100/
└── testing/                             patients 101-150: not in the SSL4MIS protocol, ignored

Cases are patientXXX_frame01 (ED) and patientXXX_frame02 (ES), as in the SSL4MIS copy;
volumes keep the stored voxel order as (z, y, x), min-max scaled per volume. A partial download
(patients the SSL4MIS lists name are missing) gets a seeded split by patient instead, said so."""),
    "lits": ("LiTS (cases 1-100 train, 101-131 test)", """\
RAW/                                     any sub-folders (e.g. the two training batches)
├── volume-0.nii(.gz)                    CT image, HU
├── segmentation-0.nii(.gz)              label 0 bg, 1 liver, 2 tumour
└── ... volume-130 / segmentation-130

Files 0-130 are the spec's cases 1-131: 0-89 train, 90-99 validation (spec 91-100), 100-130
test. Training cases in ascending order: budgets 1, 5, 10 cases = files 0, 0-4, 0-9.
Reoriented to RAS, axial slices, HU clipped to --window (default -200 250) then [0, 1]."""),
    "mmwhs": ("MM-WHS CT (15 train / 5 test)", """\
RAW/                                     any sub-folders (e.g. ct_train/)
├── ct_train_1001_image.nii.gz           CT image, HU
├── ct_train_1001_label.nii.gz           raw values 500 LV, 600 RV, 420 LA (421 too), 550 RA,
│                                        205 Myo, 820 AAo, 850 PA -> 1..7; others are an error
└── ... ct_train_1020_*

Test 1001, 1002, 1008, 1014, 1015; validation 1020; train 1018, 1004, then ascending
(budgets 1 and 2 volumes = 1018 and 1018, 1004). Reoriented to RAS, axial slices,
HU clipped to --window (default -200 800) then [0, 1]."""),
    "nnunet": ("an nnU-Net v2 raw dataset with one channel (seeded split)", """\
DATASET_DIR/
├── dataset.json          {"channel_names": {"0": "CT"}, "labels": {"background": 0, ...},
│                          "file_ending": ".nii.gz"}
├── imagesTr/<case>_0000.nii.gz          a case without labelsTr/<case> trains as unlabeled data
├── labelsTr/<case>.nii.gz
├── imagesTs/<case>_0000.nii.gz          optional; the test split when labelsTs/ is there
└── labelsTs/<case>.nii.gz               optional
--unlabeled DIR                          more scans without masks (any .nii.gz/.nii), e.g. imagesTs

Labeled cases are split by patient (seeded; at least 2 masks: one trains, one validates; test
may be empty). Reoriented to RAS, sliced along the axis of largest spacing (--axis to choose).
Channel CT: clipped to --window, or to the 0.5/99.5 percentiles of the labeled training
foreground; other channels: each volume clipped to its own 0.5/99.5 percentiles; then [0, 1].
Unlabeled cases are read the same way and only train."""),
    "folder": ("your scans, with masks for some of them (seeded split)", """\
--images DIR/                            scans: case.nii.gz (or case_0000.nii.gz), any sub-folders
--masks DIR/                             masks for some scans: case.nii.gz, same geometry
--unlabeled DIR/                         optional: more scans without masks

A scan without a mask trains as unlabeled data; a mask without a scan is an error. Classes:
the distinct mask values (0 = background) in ascending order, named 'class <value>', or
--classes NAME... for masks holding 0..K-1 (other values are an error). Split, orientation,
slicing axis and normalisation as for nnunet; --modality CT estimates the HU window from the
labeled foreground (or give --window), anything else clips each volume to its 0.5/99.5
percentiles."""),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-command per raw layout, each with RAW OUT and its own options."""
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, (summary, tree) in LAYOUTS.items():
        sub = datasets.add_parser(name, help=summary, description=f"Prepare {summary}.\n\n{tree}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "folder":
            sub.add_argument("--images", type=Path, required=True, metavar="DIR", help="the scans (read only)")
            sub.add_argument("--masks", type=Path, required=True, metavar="DIR",
                             help="masks for some of the scans, same file names (read only)")
            sub.add_argument("--classes", nargs="+", metavar="NAME",
                             help="class names of mask values 0, 1, ... (default: the values found, 'class <v>')")
            sub.add_argument("--modality", default="unspecified",
                             help="noted in mona.json; CT estimates an HU window from the labeled foreground")
        else:
            sub.add_argument("raw", type=Path, metavar="DATASET_DIR" if name == "nnunet" else "RAW",
                             help="the raw dataset folder (read only)")
        sub.add_argument("out", type=Path, metavar="OUT", help="the prepared dataset folder to create")
        sub.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
        if name == "acdc":
            sub.add_argument("--lists", type=Path, metavar="DIR",
                             help="folder with train_slices.list, val.list, test.list to use instead of SSL4MIS's")
        else:
            default = {"lits": lits.WINDOW, "mmwhs": mmwhs.WINDOW}.get(name)
            sub.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=default,
                             help="clip intensities (HU) to [LO, HI], then scale that range to [0, 1]"
                             + (f" (default {default[0]:g} {default[1]:g})" if default else ""))
        if name in ("nnunet", "folder"):
            sub.add_argument("--unlabeled", type=Path, metavar="DIR", help="a folder of more scans without masks")
            sub.add_argument("--axis", type=int, choices=(0, 1, 2),
                             help="slicing axis of the RAS volume (default: the axis of largest spacing)")
            sub.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
            sub.add_argument("--val-fraction", type=float, default=0.1,
                             help="validation share of the labeled cases (default 0.1, at least one case)")
            sub.add_argument("--test-fraction", type=float,
                             help="test share of the labeled cases (default 0.2, or 0 when labelled imagesTs give "
                                  "the test set; none when too few cases are left)")
            sub.add_argument("--labeled", type=int, metavar="N", help="labeled training patients, noted in mona.json")


def run(args: argparse.Namespace) -> int:
    """Prepare the chosen dataset; `MonaError`s go up to the main CLI, which prints them in one line."""
    common = dict(overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr))
    if args.dataset == "acdc":
        out = acdc.prepare_acdc(args.raw, args.out, lists=args.lists, **common)
    elif args.dataset == "lits":
        out = lits.prepare_lits(args.raw, args.out, hu_window=tuple(args.window), **common)
    elif args.dataset == "mmwhs":
        out = mmwhs.prepare_mmwhs(args.raw, args.out, hu_window=tuple(args.window), **common)
    else:
        common.update(seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      labeled=args.labeled, axis=args.axis, hu_window=tuple(args.window) if args.window else None,
                      unlabeled=args.unlabeled)
        if args.dataset == "nnunet":
            out = nnunet.prepare_nnunet(args.raw, args.out, **common)
        else:
            out = folder.prepare_folder(args.images, args.masks, args.out, classes=args.classes,
                                        modality=args.modality, **common)
    print(f"prepared {args.dataset} in {out}")
    return 0
