"""Segment new scans with a trained run: its preprocessing replayed, masks written in the input's space.

`Predictor.segment(image, affine)` takes a scan as an array in NIfTI voxel order (x, y, z, as
`nibabel` gives it) with its affine, brings it into the array order the network was trained on,
normalises it as in training (`Preprocessing`), predicts it slice by slice (`predict_volume`)
and returns the mask in the input's own array order. `predict_file` is that, between reading a
file and writing the mask with the input's shape, affine and header. An h5 volume (SSL4MIS
layout, `image` (D, H, W)) is taken as prepared: already in the training order and normalised,
as `mona prepare` and the phantom write them.

Where the preprocessing comes from: the checkpoint's `preprocessing` when not empty, else the
`mona.json` of the run's dataset (the checkpoint's `config.data.root`), whose `normalisation`,
`orientation` and `slicing_axis` say how `mona prepare` read the raw NIfTIs (see
`preprocessing_from_metadata`); without either, SSL4MIS's: min-max per volume, stored voxel order.

Mask values: a dataset prepared from own masks records the raw value of each class
(`label_values`, e.g. 0/255, or 0/1/2/4), and the mask of a NIfTI scan is written in those values,
as the user's own masks hold them; a truth NIfTI given to score against is read in them too. An h5
volume, taken as prepared, keeps class indices, as prepared volumes do.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import h5py
import nibabel as nib
import numpy as np
import torch

from mona.data.io import (
    Volume,
    atomic_path,
    case_name,
    check_labels,
    find_dicom_series,
    is_dicom_series,
    read_volume,
    split_name,
    write_label_volume,
)
from mona.data.prepare.normalise import minmax, percentile_window, window
from mona.data.prepare.reading import h5_axes, map_labels
from mona.engine.run import load_run_model, postprocessed_classes, run_checkpoint
from mona.engine.run_folder import run_root, unfinished_stages
from mona.engine.trainer import fast_bf16, resolve_device
from mona.errors import MonaError
from mona.evaluation.case_page import case_browser
from mona.evaluation.inference import predict_volume
from mona.evaluation.metrics import score_case
from mona.evaluation.overlay import write_overlay
from mona.evaluation.postprocess import labels_from_probabilities
from mona.evaluation.quality import QualityEstimator
from mona.evaluation.report import volumes_by_name

FORMATS = ("same", "nii", "h5")
_NUMBER = r"(-?[0-9.]+(?:e[-+]?\d+)?)"
# The `normalisation` strings `mona prepare` writes (mona.data.prepare), and what each does.
_NORMALISATIONS: dict[str, Callable[..., np.ndarray]] = {
    r"minmax": minmax,
    rf"window \[{_NUMBER}, {_NUMBER}\] -> \[0, 1\]": window,
    rf"percentiles \({_NUMBER}, {_NUMBER}\) of each volume -> \[0, 1\]": percentile_window,
}
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # the identity orientation


@dataclass(frozen=True)
class Layout:
    """Maps an input's `mona.data.io` array order (z, y, x) to the network's (D, H, W) and back.

    `ornt` (nibabel orientation, stored axes -> closest RAS) is None to keep the stored voxel
    order; `perm` then puts the slicing axis first (`mona.data.prepare.reading.h5_axes`).
    """

    ornt: np.ndarray | None = None
    perm: tuple[int, int, int] = (2, 1, 0)

    def to_model(self, array: np.ndarray) -> np.ndarray:
        """(z, y, x) as `mona.data.io` reads a NIfTI -> the network's (D, H, W)."""
        return self.from_raw(array.transpose(2, 1, 0))

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        """The stored NIfTI order (x, y, z) -> the network's (D, H, W), as `mona prepare` reads it."""
        if self.ornt is not None:
            raw = nib.orientations.apply_orientation(raw, self.ornt)
        return np.ascontiguousarray(raw.transpose(self.perm))

    def to_raw(self, array: np.ndarray) -> np.ndarray:
        """(D, H, W, ...) in the network's order -> the stored NIfTI order (x, y, z, ...)."""
        raw = array.transpose(*np.argsort(self.perm), *range(3, array.ndim))
        if self.ornt is not None:
            raw = nib.orientations.apply_orientation(raw, nib.orientations.ornt_transform(_RAS, self.ornt))
        return raw

    def to_io(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.to_raw(array).transpose(2, 1, 0))

    def spacing(self, io_spacing) -> tuple[float, float, float]:
        """Voxel size along the network's (D, H, W) from one in io order (z, y, x)."""
        raw = np.asarray(io_spacing, dtype=np.float64)[::-1]
        if self.ornt is not None:
            oriented = np.empty(3)
            oriented[self.ornt[:, 0].astype(int)] = raw
            raw = oriented
        return tuple(float(raw[axis]) for axis in self.perm)


@dataclass(frozen=True)
class Preprocessing:
    """How training volumes were read: `normalisation` (a `mona.json` string), reorientation to
    closest RAS (`canonical`), the NIfTI axis the network slices (after reorientation), and the raw
    mask value of each class (`label_values`; empty: the class indices themselves)."""

    normalisation: str = "minmax"
    canonical: bool = False
    slicing_axis: int = 2
    label_values: tuple[int, ...] = ()

    def to_values(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> the dataset's raw mask values (unchanged without `label_values`)."""
        if not self.label_values:
            return labels
        return np.asarray(self.label_values, dtype=np.uint8)[labels]

    def from_values(self, values: np.ndarray, path: Path) -> np.ndarray:
        """A mask in the raw values -> class indices; a value no class has is an error naming the file."""
        if not self.label_values:
            return values
        return map_labels(values, {value: index for index, value in enumerate(self.label_values)}, path)

    def normalise(self, image: np.ndarray) -> np.ndarray:
        for pattern, function in _NORMALISATIONS.items():
            match = re.fullmatch(pattern, self.normalisation.strip())
            if match:
                return function(image, *(float(v) for v in match.groups()))
        raise MonaError(f"unknown normalisation {self.normalisation!r} (known: minmax, window [LO, HI] -> [0, 1], "
                        "percentiles (LO, HI) of each volume -> [0, 1])")

    def layout(self, affine: np.ndarray) -> Layout:
        ornt = nib.orientations.io_orientation(affine) if self.canonical else None
        return Layout(ornt, h5_axes(self.slicing_axis))


def preprocessing_from_metadata(meta: dict, source: str | Path | None = None) -> Preprocessing:
    """The `Preprocessing` a dataset's `mona.json` (or a checkpoint's `preprocessing`) describes.

    Keys: `normalisation` (default minmax), `orientation` ("RAS ..." or "stored voxel order") and
    `slicing_axis` (a NIfTI axis after reorientation). Without `orientation` the dataset was not
    made by `mona prepare` (e.g. the phantom, whose `slicing_axis` 0 is the h5 array's first axis):
    its h5 arrays are in `mona.data.io` order, i.e. stored voxel order sliced along NIfTI axis 2.
    A window is replayed as written there: `mona prepare` prints its bounds to 6 significant digits.
    """
    meta = meta.get("preprocessing") or meta
    normalisation = str(meta.get("normalisation") or "minmax")
    values = tuple(int(v) for v in meta.get("label_values") or ())
    if values == tuple(range(len(values))) or max(values, default=0) > 255:
        values = ()  # the class indices themselves; values beyond uint8 are written as class indices
    if "orientation" not in meta:
        found = Preprocessing(normalisation, label_values=values)
    else:
        axis = meta.get("slicing_axis", 2)
        if axis not in (0, 1, 2):
            raise MonaError(f"slicing_axis must be 0, 1 or 2, found {axis!r}", source)
        found = Preprocessing(normalisation, str(meta["orientation"]).startswith("RAS"), axis, values)
    try:
        found.normalise(np.zeros((1, 1, 1), dtype=np.float32))
    except MonaError as error:
        raise MonaError(str(error), source) from None
    return found


def run_preprocessing(state: dict, checkpoint: Path) -> Preprocessing:
    """The preprocessing of a checkpoint's training data (module docstring); checks the class count."""
    if state.get("preprocessing"):
        return preprocessing_from_metadata(state["preprocessing"], checkpoint)
    root = Path(state["config"]["data"]["root"])
    meta_path = root / "mona.json"
    if not meta_path.is_file():
        if not root.is_dir():
            warnings.warn(f"{root}: the dataset folder of this run (trained before checkpoints carried their "
                          "preprocessing) is gone; assuming min-max normalisation and stored voxel order", stacklevel=2)
        return Preprocessing()
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise MonaError(f"cannot read ({exc})", meta_path) from None
    declared = meta.get("num_classes") or len(meta.get("classes") or []) or state["num_classes"]
    if declared != state["num_classes"]:
        raise MonaError(f"checkpoint predicts {state['num_classes']} classes, but its dataset {meta_path} "
                        f"declares {declared}", checkpoint)
    return preprocessing_from_metadata(meta, meta_path)


def inference_amp(requested: bool, device: torch.device) -> bool:
    """`requested`, switched off (with a warning) where bf16 autocast is slower than fp32 (`fast_bf16`)."""
    if requested and not fast_bf16(device):
        warnings.warn("--amp: bf16 autocast is slower than fp32 on this device (a CPU with neither AMX "
                      "nor AMD's AVX512-BF16); predicting in fp32", stacklevel=2)
        return False
    return requested


def scan_affine(affine: np.ndarray | None, spacing=None) -> np.ndarray:
    """The 4x4 voxel -> world affine of a scan array: `affine`, else diagonal in `spacing` (or 1 mm)."""
    if affine is None:
        zooms = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in np.ravel(spacing))
        if len(zooms) != 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
            raise MonaError(f"spacing must be 3 positive numbers, got {zooms}")
        return np.diag([*zooms, 1.0])
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MonaError(f"affine must be an invertible 4x4 matrix, got {affine.tolist()}")
    return affine


@dataclass
class Segmentation:
    """One predicted scan: the network `image` (D, H, W), its class `probabilities` (C, D, H, W),
    `labels` (D, H, W) in the network's order, the `layout` back to the input's order, and the
    `preprocessing` whose raw mask values the `mask` is written in."""

    layout: Layout
    image: np.ndarray
    probabilities: torch.Tensor
    labels: np.ndarray
    preprocessing: Preprocessing = Preprocessing()

    @property
    def values(self) -> np.ndarray:
        """The labels in the dataset's raw mask values (module docstring), in the network's order."""
        return self.preprocessing.to_values(self.labels)

    @property
    def mask(self) -> np.ndarray:
        """The mask in the dataset's raw mask values and the input's own array order (NIfTI x, y, z)."""
        return np.ascontiguousarray(self.layout.to_raw(self.values))


@dataclass
class Predictor:
    """A run's network ready to segment, with what it was trained on."""

    model: torch.nn.Module
    checkpoint: Path
    iteration: int
    num_classes: int
    class_names: list[str]
    image_size: int
    preprocessing: Preprocessing
    device: torch.device
    amp: bool = False
    batch_size: int = 32
    tta: bool = False
    largest_component: tuple[int, ...] = ()  # the classes that keep only their largest connected component
    config: dict = field(default_factory=dict)  # the run's resolved config, as its checkpoint keeps it

    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """(C, D, H, W) class probabilities of a (D, H, W) volume in the network's order."""
        return predict_volume(self.model, image, self.image_size, self.device, amp=self.amp,
                              batch_size=self.batch_size, tta=self.tta)

    def segment(self, image: np.ndarray, affine: np.ndarray | None = None, spacing=None) -> np.ndarray:
        """The uint8 mask of a scan, in the scan's own array order and the raw values of the masks
        the run's dataset was prepared from (0/255 masks give 0/255; otherwise the class indices).

        `image` is 3D in NIfTI voxel order (x, y, z), raw intensities; `affine` maps its indices
        to world mm (without one: diagonal in `spacing` along its axes, or 1 mm). The scan is
        oriented as `mona prepare` read the training volumes (closest RAS from the affine, the
        slicing axis first, when the run's dataset was reoriented), normalised as they were,
        predicted, and the mask is put back in the input's order.
        """
        return self.segmentation(image, affine, spacing).mask

    def segment_file(self, path: str | Path) -> np.ndarray:
        """The mask of a NIfTI file, in nibabel's order (aligned with `nib.load(path).get_fdata()`) and
        the dataset's mask values, or of an h5 volume, in its (D, H, W) order and class indices: what
        `mona predict` writes, as an array."""
        path = Path(path)
        found = self.volume_segmentation(read_volume(path), path)
        return found.labels if split_name(path)[1] == ".h5" else found.mask

    def volume_segmentation(self, volume: Volume, path: Path) -> Segmentation:
        """`segmentation` of a volume read from `path` (an h5 volume is taken as prepared)."""
        if volume.image is None:
            raise MonaError("holds no 'image' to segment (only a 'label')", path)
        if split_name(path)[1] == ".h5":
            return self.predict_prepared(volume.image)
        try:
            return self.segmentation(volume.image.transpose(2, 1, 0), volume.affine)
        except MonaError as error:
            raise MonaError(str(error), path) from None

    def segmentation(self, image: np.ndarray, affine: np.ndarray | None = None, spacing=None) -> Segmentation:
        """`segment`, keeping the network input, probabilities and layout (for maps and overlays)."""
        return self.predict_prepared(*self.network_input(image, affine, spacing))

    def network_input(self, image: np.ndarray, affine: np.ndarray | None = None,
                      spacing=None) -> tuple[np.ndarray, Layout]:
        """The (D, H, W) array the network gets for a scan (see `segment`), and its `Layout`."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise MonaError(f"expected a 3D scan, got shape {image.shape}")
        if not np.isfinite(image).all():
            raise MonaError("image contains NaN or infinite values")
        layout = self.preprocessing.layout(scan_affine(affine, spacing))
        return self.preprocessing.normalise(layout.from_raw(image)), layout

    def predict_prepared(self, image: np.ndarray, layout: Layout = Layout()) -> Segmentation:
        """Segment a (D, H, W) volume already in the network's order and normalised (an h5 volume)."""
        probs = self.probabilities(image)
        return Segmentation(layout, image, probs,
                            labels_from_probabilities(probs, self.largest_component), self.preprocessing)


def load_predictor(run_dir: str | Path, checkpoint: str = "best", device: str = "auto", amp: bool = False,
                   batch_size: int = 32, tta: bool = False, postprocess: str = "val",
                   unfinished: bool = False) -> Predictor:
    """A run's `best` (on val), `last` or given checkpoint file, on `device`; `amp` is taken as is.
    `postprocess`: which classes keep only their largest connected component, "val" (the run's
    choice on val for its best checkpoint, RUN/postprocessing.json), "none" or "all" (`postprocessed_classes`).
    A run still training, or stopped before its last stage ended, is refused unless `unfinished`: its
    checkpoint so far is an intermediate one, and post-processing is chosen only when training ends."""
    run_dir = Path(run_dir)
    if batch_size < 1:
        raise MonaError(f"batch size must be at least 1, got {batch_size}")
    if checkpoint in ("best", "last") and not unfinished and Path(run_dir).is_dir():
        progress = unfinished_stages(run_root(run_dir))
        if progress:
            raise MonaError(f"the run is unfinished ({progress}): finish it (mona train --resume {run_root(run_dir)}),"
                            " or use its checkpoint so far with --unfinished (Python: unfinished=True)", run_dir)
    model, state = load_run_model(run_dir, checkpoint)
    path = run_checkpoint(run_dir, checkpoint)
    missing = [key for key in ("image_size", "config") if key not in state]
    if missing:
        raise MonaError(f"checkpoint lacks {', '.join(missing)}", path)
    names = list(state.get("class_names") or [])
    if len(names) != state["num_classes"]:
        names = ["background"] + [f"class {c}" for c in range(1, state["num_classes"])]
    target, iteration = resolve_device(device), int(state.get("iteration", 0))
    return Predictor(model.to(target).eval(), path, iteration, state["num_classes"], names,
                     state["image_size"], run_preprocessing(state, path), target, amp, batch_size, tta,
                     postprocessed_classes(run_dir, postprocess, state["num_classes"], iteration), state["config"])


@dataclass
class CaseResult:
    """One segmented input: where its mask went, its score rows (with a truth) and its time."""

    name: str
    source: Path
    output: Path
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    quality: dict | None = None  # the `quality` estimate's row: case, quality and its parts
    browser: str = ""  # the case's slice browser for the `report` page


def output_path(path: Path, out_dir: Path, fmt: str = "same") -> Path:
    """OUT/<case><ext>: the input's extension (`same`), `.h5`, or NIfTI (`.nii.gz` unless it was `.nii`;
    a DICOM series' mask is always NIfTI).

    <case> is `case_name`: `case_0000.nii.gz` is written as `case.nii.gz`, as nnU-Net names predictions.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    name, ext = case_name(path), split_name(path)[1]
    if fmt == "h5" or (fmt == "same" and ext == ".h5"):
        return out_dir / f"{name}.h5"
    return out_dir / f"{name}{ext if ext.startswith('.nii') else '.nii.gz'}"


def predict_file(predictor: Predictor, path: str | Path, out_dir: str | Path, *, fmt: str = "same",
                 probabilities: bool = False, truth: str | Path | None = None, overlay: bool = False,
                 quality: QualityEstimator | None = None, report: bool = False) -> CaseResult:
    """Segment one NIfTI or h5 volume into `output_path(...)`.

    `probabilities` adds per-class float32 maps: an h5 output's `probabilities` (C, D, H, W), else
    OUT/probabilities/<name> as a 4D NIfTI (x, y, z, C) in the input's space. `truth` (a label
    volume of the input's shape) is scored with `score_case`; `overlay` writes OUT/overlays/<name>.png.
    `quality` (`mona.evaluation.quality`) estimates the mask's Dice into `result.quality` and writes
    its uncertainty map to OUT/uncertainty/<name>.nii.gz (float32, in the input's space); `report`
    (with `quality`) keeps the case's slice browser for the page (`mona.evaluation.case_page`).
    """
    start = time.perf_counter()
    path, out_dir = Path(path), Path(out_dir)
    name = case_name(path)
    output = output_path(path, out_dir, fmt)
    if output.resolve() == path.resolve():
        raise MonaError("the output would overwrite this input: choose another output folder", path)
    volume = read_volume(path)
    truth_volume = None if truth is None else _read_truth(Path(truth), volume, predictor)
    found = predictor.volume_segmentation(volume, path)
    layout, labels = found.layout, found.labels
    result = CaseResult(name, path, output)
    maps = layout.to_raw(found.probabilities.numpy().transpose(1, 2, 3, 0)) if probabilities else None  # (x, y, z, C)
    written = labels if split_name(path)[1] == ".h5" else found.values  # module docstring: mask values
    if maps is not None and output.suffix == ".h5":
        _write_h5(output, layout.to_io(written), maps.transpose(3, 2, 1, 0), volume.spacing)
    else:
        write_label_volume(output, layout.to_io(written), volume)
    if maps is not None and output.suffix != ".h5":
        _write_nifti(out_dir / "probabilities" / output.name, maps, volume)
    if truth_volume is not None:
        spacing = truth_volume.spacing or volume.spacing
        result.rows = score_case(layout.to_io(labels), truth_volume.label, predictor.num_classes, spacing, name)
    if quality is not None:
        _assess(result, found, quality, out_dir, volume, predictor.class_names, report,
                None if truth_volume is None else layout.to_model(truth_volume.label))
    if overlay:
        spacing = layout.spacing(volume.spacing) if volume.spacing else (1.0, 1.0, 1.0)
        write_overlay(out_dir / "overlays" / f"{name}.png", found.image, labels, predictor.num_classes,
                      truth=None if truth_volume is None else layout.to_model(truth_volume.label),
                      class_names=predictor.class_names, aspect=spacing[1] / spacing[2], title=name)
    result.seconds = time.perf_counter() - start
    return result


def _assess(result: CaseResult, found: Segmentation, quality: QualityEstimator, out_dir: Path, volume: Volume,
            class_names: list[str], report: bool, truth: np.ndarray | None) -> None:
    """`predict_file`'s quality estimate, uncertainty map and, for `report`, slice browser of one case."""
    assessment = quality.assess(found, result.name)
    result.quality = assessment.row
    if result.rows:
        result.quality["dice"] = float(np.mean([row["dice"] for row in result.rows]))
    _write_nifti(out_dir / "uncertainty" / f"{result.name}.nii.gz", found.layout.to_raw(assessment.uncertainty),
                 volume)
    if report:
        result.browser = case_browser(result.quality, found.image, found.labels, assessment.uncertainty,
                                      class_names, truth)


def _read_truth(path: Path, volume: Volume, predictor: Predictor) -> Volume:
    """A truth volume as class indices: a NIfTI in the dataset's mask values (module docstring), an h5 as is."""
    truth = read_volume(path, labels_only=True)
    if truth.label.shape != volume.shape:
        raise MonaError(f"truth shape {truth.label.shape} differs from the input's {volume.shape}", path)
    if split_name(path)[1] != ".h5":
        truth.label = predictor.preprocessing.from_values(truth.label, path)
    check_labels(truth.label, predictor.num_classes, path)
    return truth


def _write_h5(path: Path, labels: np.ndarray, probs: np.ndarray, spacing) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("label", data=labels, compression="gzip")
        f.create_dataset("probabilities", data=probs.astype(np.float32), compression="gzip")
        if spacing is not None:
            f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


def _write_nifti(path: Path, data: np.ndarray, volume: Volume) -> None:
    """float32 NIfTI in the input's affine and header (a diagonal affine in its spacing for h5 input)."""
    affine = volume.affine
    if affine is None:
        affine = np.diag([*(volume.spacing[::-1] if volume.spacing else (1.0, 1.0, 1.0)), 1.0])
    header = None if volume.header is None else volume.header.copy()
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine, header=header)
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def find_inputs(path: str | Path) -> list[Path]:
    """The volumes of INPUT: the file itself, a folder holding one DICOM series, or a folder's
    `.nii.gz`/`.nii`/`.h5` files by name and the DICOM series folders in and below it (`find_dicom_series`)."""
    path = Path(path)
    if path.is_file() or is_dicom_series(path):
        return [path]
    if not path.exists():
        raise MonaError("input not found", path)
    files, series = volumes_by_name(path), find_dicom_series(path)
    both = sorted(set(files) & set(series))
    if both:
        raise MonaError(f"case {both[0]} is both {files[both[0]].name} and the DICOM series {series[both[0]]}", path)
    if not files and not series:
        raise MonaError("no volumes (.nii.gz, .nii, .h5) or DICOM series in this folder", path)
    return [*files.values(), *series.values()]


def predict_cases(predictor: Predictor, inputs: list[Path], out_dir: str | Path, *,
                  truth_dir: str | Path | None = None, **options) -> Iterator[tuple[Path, CaseResult | MonaError]]:
    """`predict_file` each input in turn (`options` are its keywords), yielding (input, result or the
    MonaError that stopped it): a bad case does not stop the others. Truths are matched by name; a
    case without one is segmented and not scored (its result has no rows)."""
    truths = {} if truth_dir is None else volumes_by_name(Path(truth_dir))
    for path in inputs:
        try:
            yield path, predict_file(predictor, path, out_dir, truth=truths.get(case_name(path)), **options)
        except MonaError as error:
            yield path, error
