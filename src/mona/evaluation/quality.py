"""Per-case quality estimate (the mean Dice a predicted mask is expected to have) and per-voxel uncertainty.

Why not one confidence score: a model that misses the heart can be *sure* of it (issue #47: the
whole-volume mean entropy ranked failed ACDC cases among the best). The estimate asks how stable the
mask is and how plausible it looks, and learns from the run's own val volumes (every run has them,
with masks) how that maps to Dice. Its parts, each per case:

- agreement under perturbation: the mean over foreground classes of the Dice between the mask and
  the argmax of the network on the slices flipped and rotated by 90 degrees (the 7 other elements of
  the square's symmetry group, undone on the output: `VIEWS`, `tta`), of the network with its encoder
  dropout on (`MC_SAMPLES` seeded samples, Gal & Ghahramani 2016: `mc`) and of the run's EMA teacher
  where its checkpoint keeps one (the semi-supervised methods: `teacher`); `agreement` is their mean;
- anatomical plausibility against the run's training masks (`Anatomy`): the share of the classes that
  nearly every training volume has but the mask lacks (`missing`), of voxels outside each class's
  largest 3D connected component (`fragments`), how far each class's share of the foreground is from
  the training volumes' (log-ratio z-score, `share`), and which classes touch which (total variation
  distance of the in-plane class-contact distributions, `contacts`);
- the Dice the network itself expects (`expected`): per foreground class, the soft Dice between the
  mask and the mean probabilities of the dropout samples (MC dropout's predictive distribution),
  2 sum_{mask=c} p_c / (|mask = c| + sum p_c), averaged over classes: it weighs a boundary's
  uncertainty against the size of its structure, as Dice does;
- the mean over foreground classes of the mean max-probability inside each predicted class, 0 for a
  class the mask lacks (`class_confidence`), and the issue's two baselines: the mean max-probability
  over the predicted foreground (`confidence`) and the whole-volume mean entropy over log C (`entropy`).

`QualityModel` maps the parts to expected Dice: among the fixed `FORMS` (the expected Dice or the raw
agreement as they are, a line on one part, ridge fits on groups of parts) it keeps the one with the
lowest leave-one-out mean absolute error over the val volumes, refits it on all of them and clips to
[0, 1]; with fewer than `MIN_FIT` val volumes it keeps the expected Dice as it is. Fit, anatomy and
the val parts are cached in RUN/quality_model.json, keyed by the checkpoint and the prediction
settings. The perturbed predictions are post-processed as the mask was (a removed island is not
disagreement); the per-voxel uncertainty is the share of them whose label differs from the mask.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Collection, Iterable, Sequence

import numpy as np
import torch
from scipy.ndimage import generate_binary_structure, label
from scipy.stats import spearmanr
from tqdm import tqdm

from mona.augment.weak import resize_images
from mona.config import config_from_dict
from mona.data.io import atomic_path
from mona.data.ssl4mis import dataset_info, load_volumes, read_h5, training_volumes
from mona.engine.checkpoint import load_checkpoint, network_weights
from mona.engine.run import checkpoint_unet
from mona.engine.run_folder import run_root
from mona.errors import MonaError
from mona.evaluation.inference import autocast, dice_per_class
from mona.evaluation.postprocess import keep_largest_component

VERSION = 3
MC_SAMPLES = 4
MIN_FIT = 6  # fewer val volumes than this: no choice of form, the expected Dice (else the scaled agreement)
RIDGE = 1.0  # ridge penalty on standardised parts (n = 20 val volumes: a light shrinkage)
PRESENT = 0.9  # a class present in at least this share of the training volumes is expected in a mask
PERTURBATIONS = ("tta", "mc", "teacher")
PLAUSIBILITY = ("missing", "fragments", "share", "contacts")
PARTS = ("agreement", *PERTURBATIONS, *PLAUSIBILITY, "expected", "class_confidence", "confidence", "entropy")
PERTURBED = ("agreement", *PERTURBATIONS, "expected")  # the parts that need the perturbed predictions
# Candidate forms and the parts they read, simplest first (ties keep the simpler). The `UNFITTED` are
# used as they are: the expected Dice, or the agreement times (1 - missing), as it is or scaled by the
# least-squares factor through the origin on val; the others are ridge fits on their parts.
UNFITTED = ("expected Dice", "raw agreement", "scaled agreement")
FORMS: dict[str, tuple[str, ...]] = {
    "expected Dice": ("expected",),
    "raw agreement": ("agreement", "missing"),
    "scaled agreement": ("agreement", "missing"),
    "line on expected Dice": ("expected",),
    "line on class confidence": ("class_confidence",),
    "expected Dice + class confidence": ("expected", "class_confidence"),
    "line on agreement": ("agreement",),
    "line on confidence": ("confidence",),
    "agreement + plausibility": ("agreement", *PLAUSIBILITY),
    "perturbations": PERTURBATIONS,
    "perturbations + plausibility": (*PERTURBATIONS, *PLAUSIBILITY),
    "all parts": PARTS[1:],
}
# The other 7 of the square's 8 symmetries as (quarter turns, transpose first)
VIEWS = [(turns, transpose) for transpose in (False, True) for turns in range(4)][1:]


def _view(x: torch.Tensor, turns: int, transpose: bool) -> torch.Tensor:
    x = x.transpose(-2, -1) if transpose else x
    return torch.rot90(x, turns, (-2, -1)) if turns else x


def _unview(x: torch.Tensor, turns: int, transpose: bool) -> torch.Tensor:
    x = torch.rot90(x, -turns, (-2, -1)) if turns else x
    return x.transpose(-2, -1) if transpose else x


@contextmanager
def dropout_on(model: torch.nn.Module):
    """Dropout layers sample (MC dropout) while BatchNorm keeps its running statistics."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for module in dropouts:
        module.train()
    try:
        yield
    finally:
        for module in dropouts:
            module.eval()


@dataclass
class Perturbed:
    """A volume's predictions under perturbation: argmax label maps (D, H, W) uint8 by group (`tta`: one
    per `VIEWS`, `mc`: one per dropout sample, `teacher`: one, when there is a teacher) and the mean class
    probabilities (C, D, H, W) of the dropout samples (None without samples)."""

    labels: dict[str, list[np.ndarray]]
    mc_probabilities: torch.Tensor | None


@torch.no_grad()
def perturbed_predictions(model: torch.nn.Module, image: np.ndarray, image_size: int, device: torch.device, *,
                          teacher: torch.nn.Module | None = None, mc_samples: int = MC_SAMPLES,
                          batch_size: int = 32, amp: bool = False, seed: int = 0,
                          largest_component: Collection[int] = ()) -> Perturbed:
    """The predictions of a (D, H, W) volume under each perturbation (`Perturbed`); the dropout samples
    are seeded by `seed` (the same for the same `batch_size`). Slices are resized as `predict_volume`
    does, probabilities resized back; each label map post-processed as the mask it is set against
    (`largest_component`: the classes that keep only their largest connected component)."""
    passes = [("tta", model, view) for view in VIEWS] + [("mc", model, None)] * mc_samples
    passes += [("teacher", teacher, None)] if teacher is not None else []
    slices = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
    original = tuple(slices.shape[-2:])
    chunks: list[list[torch.Tensor]] = [[] for _ in passes]
    mc_chunks: list[torch.Tensor] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # MC samples repeat, the caller's random state stays
        torch.manual_seed(seed)
        for start in range(0, slices.shape[0], batch_size):
            chunk = resize_images(slices[start:start + batch_size].to(device), (image_size, image_size))
            mc_sum = 0
            for index, (group, network, view) in enumerate(passes):
                with dropout_on(network) if group == "mc" else nullcontext(), autocast(device, amp):
                    logits = network(_view(chunk, *view) if view else chunk).logits.float()
                probs = resize_images(torch.softmax(_unview(logits, *view) if view else logits, dim=1), original)
                chunks[index].append(probs.max(1).indices.to(torch.uint8).cpu())  # argmax, ~10x faster on a CPU
                if group == "mc":
                    mc_sum = mc_sum + probs
            if mc_samples:
                mc_chunks.append((mc_sum / mc_samples).cpu())
    labels: dict[str, list[np.ndarray]] = {}
    for (group, _, _), parts in zip(passes, chunks):
        found = torch.cat(parts).numpy()
        labels.setdefault(group, []).append(keep_largest_component(found, largest_component)
                                            if largest_component else found)
    return Perturbed(labels, torch.cat(mc_chunks).permute(1, 0, 2, 3) if mc_chunks else None)


def soft_dice(mask: np.ndarray, probabilities: torch.Tensor) -> float:
    """Mean over foreground classes of 2 sum_{mask=c} p_c / (|mask = c| + sum p_c) (1 where both are empty)."""
    scores = []
    for c in range(1, probabilities.shape[0]):
        inside = torch.from_numpy(mask == c)
        denominator = float(inside.sum()) + float(probabilities[c].sum())
        scores.append(1.0 if denominator == 0 else 2.0 * float(probabilities[c][inside].sum()) / denominator)
    return float(np.mean(scores))


def _contacts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts of in-plane neighbouring voxel pairs of two different classes (upper triangle)."""
    counts = np.zeros(num_classes * num_classes, np.int64)
    for a, b in ((labels[..., :-1], labels[..., 1:]), (labels[..., :-1, :], labels[..., 1:, :])):
        low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        differ = low != high
        counts += np.bincount(low[differ] * num_classes + high[differ], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class Anatomy:
    """The training masks, per volume: how often each foreground class is present, the mean and std
    of its log share of the foreground where present, and the distribution of in-plane contacts
    between classes (flattened (C, C) upper triangle, summing to 1)."""

    num_classes: int
    presence: list[float]
    share_mean: list[float]
    share_std: list[float]
    contacts: list[float]

    @classmethod
    def from_masks(cls, volumes: Iterable[Sequence[np.ndarray]], num_classes: int) -> Anatomy:
        """From label volumes, each a (D, H, W) array or a list of 2D slices (sizes may differ)."""
        present, shares, contacts = [], [], np.zeros((num_classes, num_classes))
        for volume in volumes:
            counts = sum(np.bincount(np.asarray(s).ravel(), minlength=num_classes)[:num_classes] for s in volume)
            contacts += sum(_contacts(np.asarray(s), num_classes) for s in volume)
            present.append(counts[1:] > 0)
            shares.append(np.log(np.maximum(counts[1:], 1) / max(counts[1:].sum(), 1)))
        if not present:
            raise MonaError("no training masks to learn the anatomy from")
        present, shares = np.array(present), np.array(shares)
        mean = [float(shares[present[:, c], c].mean()) if present[:, c].any() else 0.0 for c in range(num_classes - 1)]
        std = [float(shares[present[:, c], c].std()) if present[:, c].any() else 0.0 for c in range(num_classes - 1)]
        total = contacts.sum()
        return cls(num_classes, present.mean(0).tolist(), mean, std,
                   (contacts / total if total else contacts).ravel().tolist())

    def plausibility(self, labels: np.ndarray) -> dict[str, float]:
        """`missing`, `fragments`, `share` and `contacts` of a (D, H, W) label volume, each in [0, 1]
        (0: as plausible as the training masks; module docstring)."""
        counts = np.bincount(labels.ravel(), minlength=self.num_classes)[1:self.num_classes]
        expected = np.asarray(self.presence) >= PRESENT
        missing = float((expected & (counts == 0)).sum() / expected.sum()) if expected.any() else 0.0
        present = np.flatnonzero(counts)
        if not len(present):
            return {"missing": missing, "fragments": 1.0, "share": 1.0, "contacts": 1.0}
        structure = generate_binary_structure(3, 3)
        fragments = []
        for c in present:
            components, count = label(labels == c + 1, structure=structure)
            fragments.append(1 - np.bincount(components.ravel())[1:].max() / counts[c] if count > 1 else 0.0)
        shares = np.log(counts[present] / counts.sum())
        z = np.abs(shares - np.asarray(self.share_mean)[present]) / np.maximum(np.asarray(self.share_std)[present], 0.1)
        seen = _contacts(labels, self.num_classes).ravel().astype(np.float64)
        distance = 0.5 * np.abs(seen / seen.sum() - np.asarray(self.contacts)).sum() if seen.sum() else 1.0
        return {"missing": missing, "fragments": float(np.mean(fragments)),
                "share": float(np.mean(np.minimum(z, 5.0)) / 5.0), "contacts": float(distance)}


def case_parts(mask: np.ndarray, probabilities: torch.Tensor, perturbed: Perturbed | None,
               anatomy: Anatomy) -> tuple[dict[str, float], np.ndarray | None]:
    """The parts of a case (module docstring) and its per-voxel uncertainty (D, H, W) float32: the share
    of perturbed predictions whose label differs from the (D, H, W) `mask`. `probabilities` (C, D, H, W)
    are the network's, from which the mask was taken. Without `perturbed`: the other parts, and no map."""
    num_classes = probabilities.shape[0]
    parts: dict[str, float] = {}
    if perturbed is not None:
        for group, labels in perturbed.labels.items():
            parts[group] = float(np.mean([dice_per_class(mask, other, num_classes).mean() for other in labels]))
        parts["agreement"] = float(np.mean([parts[group] for group in perturbed.labels]))
        if perturbed.mc_probabilities is not None:
            parts["expected"] = soft_dice(mask, perturbed.mc_probabilities)
    parts.update(anatomy.plausibility(mask))
    top = probabilities.max(0).values.numpy()
    parts["class_confidence"] = float(np.mean([top[mask == c].mean() if (mask == c).any() else 0.0
                                               for c in range(1, num_classes)]))
    parts["confidence"] = float(top[mask > 0].mean()) if (mask > 0).any() else 0.0
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(0).mean()
    parts["entropy"] = float(entropy / np.log(num_classes))
    parts = {name: parts[name] for name in PARTS if name in parts}
    if perturbed is None:
        return parts, None
    others = [labels for group in perturbed.labels.values() for labels in group]
    return parts, np.mean([other != mask for other in others], axis=0, dtype=np.float32)


def _unfitted(form: str, parts: dict[str, float]) -> float:
    """An `UNFITTED` form's value before any scaling."""
    return parts["expected"] if form == "expected Dice" else parts["agreement"] * (1.0 - parts["missing"])


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge fit of y on standardised columns of x: (column means, scales, coefficients, intercept)."""
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + RIDGE * np.eye(x.shape[1]), z.T @ (y - y.mean()))
    return mean, scale, coef, float(y.mean())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation; 0 where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


@dataclass
class QualityModel:
    """Expected mean Dice from a case's parts: the `form` chosen on val (module docstring), its fitted
    `features`, their means and scales, ridge coefficients and intercept; `forms` holds each
    candidate's leave-one-out MAE and Spearman on val (the evidence for the choice)."""

    form: str = "raw agreement"
    features: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    coef: tuple[float, ...] = ()
    intercept: float = 0.0
    forms: dict | None = None

    @property
    def needs_perturbations(self) -> bool:
        """Whether the form reads a part of the perturbed predictions (12-13 extra network passes a case)."""
        return bool(set(FORMS[self.form] if self.form in UNFITTED else self.features) & set(PERTURBED))

    def predict(self, parts: dict[str, float]) -> float:
        if not self.features:
            return float(np.clip(_unfitted(self.form, parts) * (self.coef[0] if self.coef else 1.0), 0.0, 1.0))
        x = np.array([parts[name] for name in self.features])
        value = self.intercept + float(((x - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef))
        return float(np.clip(value, 0.0, 1.0))

    @classmethod
    def fit_form(cls, form: str, features: Sequence[str], rows: Sequence[dict[str, float]],
                 dice: Sequence[float]) -> QualityModel:
        if form in UNFITTED:
            raw = np.array([_unfitted(form, row) for row in rows])
            scale = float(raw @ np.asarray(dice) / (raw @ raw)) if form == "scaled agreement" and raw @ raw else 1.0
            return cls(form, coef=(scale,) if form == "scaled agreement" else ())
        x = np.array([[row[name] for name in features] for row in rows])
        mean, scale, coef, intercept = _ridge(x, np.asarray(dice, dtype=np.float64))
        return cls(form, tuple(features), tuple(mean.tolist()), tuple(scale.tolist()), tuple(coef.tolist()), intercept)

    @classmethod
    def fit(cls, rows: Sequence[dict[str, float]], dice: Sequence[float]) -> QualityModel:
        """The form with the lowest leave-one-out MAE on (`rows`, `dice`), refitted on all of them; with
        fewer than `MIN_FIT` rows, the expected Dice as it is (the scaled agreement where rows lack it)."""
        rows, dice = list(rows), list(dice)
        if not rows:
            return cls(forms={})
        # a fit uses the parts the rows have (no teacher: none); an unfitted form needs all of its own
        candidates = {name: tuple(f for f in features if f in rows[0]) for name, features in FORMS.items()}
        candidates = {name: f for name, f in candidates.items() if f == FORMS[name] or (f and name not in UNFITTED)}
        if len(rows) < MIN_FIT:
            form = "expected Dice" if "expected Dice" in candidates else "scaled agreement"
            model = cls.fit_form(form, candidates[form], rows, dice)
            model.forms = {}
            return model
        scores = {}
        for name, features in candidates.items():
            held_out = [cls.fit_form(name, features, rows[:i] + rows[i + 1:], dice[:i] + dice[i + 1:]).predict(rows[i])
                        for i in range(len(rows))]
            scores[name] = {"loo_mae": float(np.mean(np.abs(np.array(held_out) - dice))),
                            "loo_spearman": spearman(held_out, dice)}
        best = min(scores, key=lambda name: round(scores[name]["loo_mae"], 6))
        model = cls.fit_form(best, candidates[best], rows, dice)
        model.forms = scores
        return model


@dataclass
class Assessment:
    """One case's quality row (`case`, `quality`, then the parts) and uncertainty map (D, H, W)."""

    row: dict
    uncertainty: np.ndarray

    @property
    def quality(self) -> float:
        return self.row["quality"]


@dataclass
class QualityEstimator:
    """A predictor's quality estimate: its teacher (or None), the training anatomy and the fit on val."""

    predictor: object  # mona.evaluation.predict.Predictor (not imported: it imports this module)
    teacher: torch.nn.Module | None
    anatomy: Anatomy
    model: QualityModel
    val: list[dict]  # the val cases the model was fitted on: case, dice and parts

    def parts(self, found, perturb: bool = True) -> tuple[dict[str, float], np.ndarray | None]:
        """`case_parts` of a `mona.evaluation.predict.Segmentation` of this predictor (without `perturb`: no
        perturbed predictions, so neither their parts nor the uncertainty map)."""
        p = self.predictor
        perturbed = perturbed_predictions(p.model, found.image, p.image_size, p.device, teacher=self.teacher,
                                          batch_size=p.batch_size, amp=p.amp,
                                          largest_component=p.largest_component) if perturb else None
        return case_parts(found.labels, found.probabilities, perturbed, self.anatomy)

    def score(self, volumes: Iterable, desc: str = "scoring", progress: bool = False) -> list[dict]:
        """`case`, true mean `dice` over classes and the parts of each prepared volume with a label
        (`mona.data.ssl4mis.Volume`), predicted as `predict` does."""
        p, rows = self.predictor, []
        for volume in tqdm(volumes, desc=desc, unit="volume", disable=not progress, leave=False):
            found = p.predict_prepared(volume.image)
            dice = float(dice_per_class(found.labels, volume.label, p.num_classes).mean())
            rows.append({"case": volume.name, "dice": dice, **self.parts(found)[0]})
        return rows

    def assess(self, found, case: str) -> Assessment:
        parts, uncertainty = self.parts(found)
        return Assessment({"case": case, "quality": self.model.predict(parts), **parts}, uncertainty)

    def quality(self, found) -> float:
        """`assess(found).quality`, without the perturbed predictions where the form does not read them
        (a ranking of many cases, as `mona suggest`'s, then costs one network pass a case)."""
        return self.model.predict(self.parts(found, perturb=self.model.needs_perturbations)[0])


def teacher_network(state: dict, path: Path, device: torch.device) -> torch.nn.Module | None:
    """The checkpoint's EMA teacher UNet (its `teacher.` entries), or None when it keeps none."""
    weights = network_weights(state, "teacher")
    return checkpoint_unet(state, weights, path).to(device).eval() if weights else None


def slice_arrays(root: Path, names: Sequence[str], num_classes: int, key: str) -> list[np.ndarray]:
    """`image` or `label` of each 2D slice file data/slices/<name>.h5."""
    index = 0 if key == "image" else 1
    return [read_h5(root / "data" / "slices" / f"{name}.h5", 2, num_classes, need_label=key == "label")[index]
            for name in names]


def _key(predictor) -> dict:
    return {"version": VERSION, "checkpoint": str(Path(predictor.checkpoint).resolve()),
            "iteration": predictor.iteration, "tta": predictor.tta, "mc_samples": MC_SAMPLES,
            "largest_component": list(predictor.largest_component)}


def load_quality_estimator(predictor, run_dir: str | Path, progress: bool = False,
                           refit: bool = False) -> QualityEstimator:
    """The quality estimate of a `Predictor` of the run `run_dir`: read from RUN/quality_model.json when
    it was fitted for this checkpoint and these settings (and not `refit`), else fitted on the run's val
    volumes and their masks (each predicted as `predictor` does) and cached there (atomically)."""
    state = load_checkpoint(predictor.checkpoint)
    teacher = teacher_network(state, predictor.checkpoint, predictor.device)
    cache, key = run_root(run_dir) / "quality_model.json", _key(predictor)
    if cache.is_file() and not refit:
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key and set(saved["model"]["features"]) <= set(PARTS):
                model = saved["model"]
                model = QualityModel(**{**model, **{name: tuple(model[name]) for name in ("features", "mean",
                                                                                          "scale", "coef")}})
                return QualityEstimator(predictor, teacher, Anatomy(**saved["anatomy"]), model, saved["val"])
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or from another version: fitted again below
    config = config_from_dict(predictor.config)
    root = Path(config.data.root)
    if not root.is_dir():
        raise MonaError("the quality estimate is fitted on the run's val volumes, and the run's dataset is not "
                        "there (moved?)", root)
    info = dataset_info(root, predictor.num_classes)
    budget, volumes = training_volumes(root, config.data.labeled, info.metadata.get("unlabeled_cases") or ())
    anatomy = Anatomy.from_masks((slice_arrays(root, volumes[v], info.num_classes, "label") for v in budget),
                                 info.num_classes)
    estimator = QualityEstimator(predictor, teacher, anatomy, QualityModel(), [])
    estimator.val = estimator.score(load_volumes(info, "val"), "fitting the quality estimate on val", progress)
    estimator.model = QualityModel.fit(estimator.val, [row["dice"] for row in estimator.val])
    try:
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps({"key": key, "model": asdict(estimator.model), "anatomy": asdict(anatomy),
                                       "val": estimator.val}, indent=1) + "\n")
    except MonaError as error:
        warnings.warn(f"the quality estimate is not cached: {error}", stacklevel=2)
    return estimator


def describe(estimator: QualityEstimator) -> str:
    """One line: the estimate's form and its leave-one-out figures on val."""
    model, count = estimator.model, len(estimator.val)
    teacher = "with" if estimator.teacher is not None else "no"
    if not model.forms:
        return (f"quality estimate: {model.form} ({teacher} teacher; {count} val volumes, fewer than {MIN_FIT} to "
                "choose a form on)")
    score = model.forms[model.form]
    return (f"quality estimate: {model.form} ({teacher} teacher), chosen on {count} val volumes: leave-one-out "
            f"MAE {score['loo_mae']:.3f}, Spearman {score['loo_spearman']:.2f}")
