"""Segment new scans with a trained run.

  mona predict -m runs/mt7 -i scans/ -o masks/
  mona predict -m runs/mt7 -i patient001.nii.gz -o masks/ --checkpoint last --tta --overlay
  mona predict -m runs/mt7 -i data/test/ -o masks/ --truth labels/ --probabilities
  mona predict -m runs/mona -i volume.h5 -o masks/ --format nii --device cuda --amp

INPUT is a NIfTI file (.nii.gz, .nii), an SSL4MIS h5 volume (key `image`), a folder holding one
DICOM series (read as one scan, as ITK reads it: mona.data.io.read_dicom_series), or a folder of
them (DICOM series: its sub-folders at any depth, each case named as its folder).
The run's best checkpoint on val is used (RUN_DIR/best.pt, or RUN_DIR/finetune/best.pt for MONA)
unless --checkpoint says otherwise. NIfTI scans get the training preprocessing (orientation,
slicing axis and normalisation from the run's dataset mona.json, see mona.evaluation.predict);
h5 volumes are taken as prepared. Each mask is written to OUT under the input's case name (as
nnU-Net: `case_0000.nii.gz` gives `case.nii.gz`), as uint8 in the input's shape, voxel order,
affine and header (h5: key `label`); a DICOM series' mask is OUT/<folder>.nii.gz in the series'
geometry (column, row, slice along the normal; the affine from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing). A NIfTI scan's mask holds the values of the masks the run's
dataset was prepared from (0/255 masks give 0/255 masks); an h5 volume's holds class indices.
A run that is still training, or stopped before it ended, is refused: --unfinished uses its
checkpoint so far (not post-processed: the choice is made when training ends).

--probabilities adds per-class float32 maps (h5 key `probabilities`, or OUT/probabilities/ as
4D NIfTI, before post-processing); --overlay writes OUT/overlays/<name>.png;
--truth DIR scores each case against the label volume of the same case name there into
OUT/cases.csv and OUT/summary.json (a NIfTI truth in the dataset's mask values, as the user's own
masks); a case without a truth there is segmented and not scored.
--quality estimates each mask's mean Dice over classes into OUT/quality.csv (worst first: `case`,
`quality`, then its parts) and writes per-voxel uncertainty maps (the share of flipped, rotated,
dropout and teacher predictions that disagree with the mask) to OUT/uncertainty/ as NIfTI in the
input's space; the estimate is fitted on the run's val volumes once and cached in
RUN/quality_model.json (see mona.evaluation.quality). --report (implies --quality) writes
OUT/index.html: every case worst first, with a slice slider, the mask's outlines and the uncertainty.
Post-processing (--postprocess): by default (val) each class where it raised val Dice keeps only
its largest 3D connected component, as the run chose for its best checkpoint when training ended
(RUN/postprocessing.json; a run without one, or another checkpoint, is not post-processed); none
gives the raw argmax, all does it for every class.
A bad case is reported and skipped: the exit code is 1 if any case failed, 2 for a bad run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from mona.engine.run import POSTPROCESS
from mona.engine.run_folder import run_root, unfinished_stages
from mona.errors import MonaError
from mona.evaluation.case_page import write_case_page
from mona.evaluation.predict import FORMATS, find_inputs, inference_amp, load_predictor, predict_cases
from mona.evaluation.quality import describe, load_quality_estimator
from mona.evaluation.report import format_table, summarize, write_csv, write_json


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, type=Path, metavar="RUN_DIR", help="a training run folder")
    parser.add_argument("-i", "--input", required=True, type=Path, metavar="INPUT",
                        help="a .nii.gz/.nii/.h5 volume, a folder holding one DICOM series, or a folder of them")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--checkpoint", default="best", help="best (on val, default), last, or a checkpoint file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast (ignored, with a warning, where bf16 is emulated: AVX2-only CPUs)")
    parser.add_argument("--tta", action="store_true", help="average the predictions of flipped slices")
    parser.add_argument("--postprocess", choices=POSTPROCESS, default="val",
                        help="keep only the largest connected component of the classes chosen on val (default), "
                        "of no class, or of all")
    parser.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="slices per forward pass")
    parser.add_argument("--format", choices=FORMATS, default="same",
                        help="output file type: the input's (default), nii (.nii.gz) or h5")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    parser.add_argument("--overlay", action="store_true", help="write a PNG montage of contours per case")
    parser.add_argument("--truth", type=Path, metavar="DIR", help="truth label volumes, matched by name: score them")
    parser.add_argument("--quality", action="store_true",
                        help="estimate each mask's Dice (OUT/quality.csv), write uncertainty maps (OUT/uncertainty/)")
    parser.add_argument("--report", action="store_true",
                        help="write OUT/index.html: every case, worst first, with its outlines and uncertainty")
    parser.add_argument("--unfinished", action="store_true",
                        help="use the checkpoint so far of a run that has not finished training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def run(args: argparse.Namespace) -> int:
    predictor = load_predictor(args.model, args.checkpoint, args.device, batch_size=args.batch_size, tta=args.tta,
                               postprocess=args.postprocess, unfinished=args.unfinished)
    left = unfinished_stages(run_root(args.model)) if args.unfinished else ""
    if left:
        print(f"note: {args.model} is unfinished ({left}): using its checkpoint so far")
    predictor.amp = inference_amp(args.amp, predictor.device)
    inputs = find_inputs(args.input)
    if args.truth is not None and not args.truth.is_dir():
        raise MonaError("truth folder not found", args.truth)
    if args.out.exists() and not args.out.is_dir():
        raise MonaError("the output folder is a file; choose another -o", args.out)
    kept = ", ".join(predictor.class_names[c] for c in predictor.largest_component) or "none"
    print(f"{predictor.checkpoint} (iteration {predictor.iteration}, {predictor.num_classes} classes) on "
          f"{predictor.device}, largest component only: {kept}: {len(inputs)} case(s) -> {args.out}")
    quality = None
    if args.quality or args.report:
        quality = load_quality_estimator(predictor, args.model, progress=not args.no_progress)
        print(describe(quality))
    rows, failed, unscored, assessed, start = [], [], [], [], time.perf_counter()
    cases = predict_cases(predictor, inputs, args.out, truth_dir=args.truth, fmt=args.format,
                          probabilities=args.probabilities, overlay=args.overlay, quality=quality,
                          report=args.report)
    with tqdm(cases, total=len(inputs), unit="case", disable=args.no_progress, file=sys.stderr) as bar:
        for path, result in bar:
            if isinstance(result, MonaError):
                failed.append(path)
                bar.write(f"mona predict: failed: {result}", file=sys.stderr)
            else:
                rows += result.rows
                assessed += [result] if result.quality else []
                if args.truth is not None and not result.rows:
                    unscored.append(result.name)
    seconds = (time.perf_counter() - start) / len(inputs)
    if rows:
        summary = summarize(rows, predictor.class_names)
        summary.update(run=str(args.model), checkpoint=str(predictor.checkpoint), iteration=predictor.iteration,
                       postprocess=args.postprocess, largest_component=list(predictor.largest_component),
                       failed=[str(path) for path in failed], unscored=unscored)
        write_csv(rows, args.out / "cases.csv")
        write_json(summary, args.out / "summary.json")
        print(format_table(summary))
    if assessed:
        _write_quality(sorted(assessed, key=lambda result: result.quality["quality"]), args, predictor)
    if unscored:
        print(f"{len(unscored)} of {len(inputs)} cases have no truth volume in {args.truth}: their masks are "
              "written, not scored")
    print(f"{len(inputs) - len(failed)} cases done, {len(failed)} failed, {seconds:.2f} s per case")
    return 1 if failed else 0


def _write_quality(results: list, args: argparse.Namespace, predictor) -> None:
    """OUT/quality.csv and, with --report, OUT/index.html, worst case first."""
    write_csv([result.quality for result in results], args.out / "quality.csv", columns=None, decimals=4)
    worst = ", ".join(f"{r.name} {r.quality['quality']:.2f}" for r in results[:3])
    print(f"expected Dice per case -> {args.out / 'quality.csv'} (worst: {worst}); uncertainty maps -> "
          f"{args.out / 'uncertainty'}")
    if args.report:
        page = write_case_page(args.out / "index.html", f"mona predict: {len(results)} case(s) of {args.input}",
                               [f"run {args.model}, {predictor.checkpoint} (iteration {predictor.iteration})"],
                               [result.quality for result in results],
                               {result.name: result.browser for result in results})
        print(f"report -> {page}")
