"""One config system: typed dataclasses, YAML presets and `key.sub=value` overrides.

A run's resolved config is written to `config.yaml` in its folder and stored in every
checkpoint, so `mona train --config RUN/config.yaml` and `--resume RUN` replay it exactly: a
saved run config (a YAML file with every section and `method` and `out`) that predates a key
of `ADDED_KEYS` is read with the value that run trained with, as `--resume` reads it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mona.errors import MonaError


@dataclass
class DataConfig:
    root: str = ""
    labeled: str = "all"  # labeled patients: the first N labeled ones in train_slices.list order, or "all"
    image_size: int = 256  # slices are resized to image_size x image_size for the network
    batch_labeled: int = 12
    batch_unlabeled: int = 12
    num_classes: int = 0  # 0 = read from the dataset's metadata (mona.json), else 4 (ACDC)


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False  # one-stage methods (MONA's stage 2 always uses Nesterov momentum, as the spec says)
    poly_power: float = 0.9


@dataclass
class TrainConfig:
    iterations: int = 30000
    val_every: int = 200
    log_every: int = 20
    checkpoint_every: float = 300.0  # seconds of training between saves of last.pt besides each validation
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # bf16 autocast (CPU and CUDA)
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 uses a gradient scaler, CUDA only)
    channels_last: bool = True
    compile: bool = False
    progress: bool = True


@dataclass
class MeanTeacherConfig:
    ema: float = 0.99
    consistency: float = 0.1
    rampup: float = 0.4  # fraction of the run over which the consistency weight ramps up (sigmoid)
    noise: float = 0.1  # std of Gaussian noise on the teacher input (clipped to +-2 std)


@dataclass
class MonaConfig:
    """MONA hyperparameters (MONA_SPEC sections 3 and 4) and ablation switches."""

    stage: str = "both"  # both | pretrain | finetune
    pretrain_iterations: int = 0  # 0 = same as train.iterations
    pretrain_batch_labeled: int = 3
    pretrain_batch_unlabeled: int = 3
    finetune_batch_labeled: int = 4
    finetune_batch_unlabeled: int = 4
    init_from: str = ""  # another run's stage 1 (its pretrain/ folder, or a checkpoint) to start stage 2 from
    ema: float = 0.99
    # stage 1
    queue_size: int = 36  # global queue: the pooled embeddings of the last 36 images (spec K = 36)
    local_queue_size: int = 0  # patch embeddings; 0 = queue_size images' worth (spec reading); 36 = the earlier one
    tau_student: float = 0.1
    tau_teacher: float = 0.01
    global_weight: float = 1.0
    local_weight: float = 1.0
    patch_size: int = 64
    patch_stride: int = 32
    # stage 2 switches
    pretrain: bool = True
    tailness: bool = True
    consistency: bool = True
    diversity: bool = True
    strong_aug: bool = True
    # stage 2 weights and parameters
    contrast_weight: float = 0.01
    unsup_weight: float = 1.0
    eqv_weight: float = 1.0
    nn_weight: float = 1.0
    rampup: float = 0.0  # fraction of stage 2 over which L_unsup, L_contrast, L_eqv, L_nn ramp in (sigmoid); 0 = spec
    confidence_threshold: float = 0.97
    eqv_confidence: float = 0.7
    eqv_pixels: str = "foreground"  # foreground (spec: pseudo-label != 0) | confident (every class) | balanced
    eqv_labeled: bool = True  # L_eqv on labeled slices too, masked by their truth (spec); false = unlabeled only
    eqv_tps_centres: str = "moved"  # L_eqv's thin-plate spline evaluated with its kernels on the moved control
    # points (the spline fitted) | regular (on the regular grid: runs before 2026-12-08; kornia#6404, docs/method.md)
    entropy_split: str = "spec"  # L_contrast: spec (U2PL: alpha_t % most certain/uncertain unlabeled pixels,
    # labeled pixels not gated) | one_cut (the earlier reading: one cut at the (100 - alpha_t) percentile, all pixels)
    diffeomorphism: str = "advmorph"  # strong view: advmorph (advchain's epsilon 1.5, ~1.5 px RMS at 256 px) |
    # rms_cells (the earlier reading: RMS velocity of 1.5 grid cells, ~16 px RMS at 256 px)
    num_queries: int = 256
    num_negatives: int = 512
    contrast_temperature: float = 0.5
    bank_size: int = 30000
    background_bank_size: int = 50000
    embed_dim: int = 128
    representation_stride: int = 1  # 1 = full-resolution pixel embeddings (spec); 2 or 4 is cheaper on CPUs
    nn_bank_size: int = 36
    nn_topk: int = 5


@dataclass
class UniMatchConfig:
    """UniMatch's ACDC settings (LiheYoung/UniMatch@0324f3d, more-scenarios/medical; docs/methods/peers.md)."""

    confidence_threshold: float = 0.95  # configs/acdc.yaml L11: pseudo-labelled pixels under it are ignored
    feature_dropout: float = 0.5  # model/unet.py L171: Dropout2d on every encoder output, decoder input only
    strong_weight: float = 0.25  # unimatch.py L175: (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2
    fp_weight: float = 0.5


@dataclass
class BCPConfig:
    """BCP's ACDC settings (DeepMed-Lab-ECNU/BCP@7879f98, code/ACDC_BCP_train.py; docs/methods/peers.md)."""

    pretrain_iterations: int = 0  # 0 = a third of train.iterations (its code: 10000 before 30000)
    ema: float = 0.99  # L390: constant, no warm-up
    unlabeled_weight: float = 0.5  # L49 u_weight: the pseudo-labelled region's weight
    box_fraction: float = 0.6667  # L135: the pasted box's side, 2/3 of the image's
    largest_component: bool = True  # L365-L366: pseudo-labels keep each class's largest 2D component
    background_dice: str = "masked"  # masked (the code since a925e30) | unmasked (paper-time and ABD's code)


@dataclass
class ABDConfig:
    """ABD's BCP-based ACDC settings (chy-upc/ABD@4efd525, code/train_ACDC_BCP.py; docs/methods/peers.md)."""

    pretrain_iterations: int = 0  # 0 = a third of train.iterations (its code: 10000 before 30000)
    ema: float = 0.99  # L437: the EMA teacher of student 1, constant
    unlabeled_weight: float = 0.5  # u_weight as BCP
    box_fraction: float = 0.6667  # BCP's box
    background_dice: str = "unmasked"  # utils/losses.py L169-L175: the background Dice ignores the region mask
    patch_grid: int = 4  # L48-L50: 4 x 4 patches (64 px at 256 px)
    top_patches: int = 4  # top_num: the confident patches the KL choice looks among
    adaptive_probability: float = 0.5  # utils/displacement.py L67: share of images displaced by the KL choice
    cutout_probability: float = 0.5  # dataloaders/dataset.py L180: the strong view's cutout
    jitter_strength: float = 0.8  # L101-L108: ColorJitter(0.8, 0.8), always applied


@dataclass
class Config:
    method: str = "supervised"  # supervised | mean_teacher | mona | unimatch | bcp | abd
    out: str = ""  # run folder; empty = runs/<method>_<labeled>
    init: str = ""  # a finished run (or checkpoint file) whose best model starts this run's last stage (--init)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    mona: MonaConfig = field(default_factory=MonaConfig)
    unimatch: UniMatchConfig = field(default_factory=UniMatchConfig)
    bcp: BCPConfig = field(default_factory=BCPConfig)
    abd: ABDConfig = field(default_factory=ABDConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mona.presets").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str | Path) -> dict[str, Any]:
    """Read a preset by name (e.g. `cpu-small`) or a YAML file path."""
    if source in preset_names():
        text = resources.files("mona.presets").joinpath(f"{source}.yaml").read_text()
        where = f"preset {source}"
    else:
        path = Path(source)
        if not path.is_file():
            raise MonaError(f"no such config file or preset (presets: {', '.join(preset_names())})", path)
        text, where = path.read_text(), str(path)
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MonaError(f"not valid YAML: {exc}", where) from None
    if not isinstance(values, dict):
        raise MonaError("a config file must hold a mapping of sections", where)
    return values


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check a YAML value against the dataclass field type (int is accepted for float)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MonaError(f"config key {key!r} expects {kind.__name__}, got {value!r}")
    return value


def _apply(target: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise MonaError(f"unknown config key {name!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MonaError(f"config key {name!r} is a section, give it a mapping")
            _apply(current, value, prefix=f"{name}.")
        else:
            setattr(target, key, _coerce(value, hints[key], name))


def _parse_override(text: str) -> dict[str, Any]:
    if "=" not in text:
        raise MonaError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    nested: dict[str, Any] = {}
    node = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


# The top-level keys every saved run config holds (`save_config` writes them all): a YAML file with all
# of them is an archived run's config, whose missing `ADDED_KEYS` take the values it trained with.
SAVED_CONFIG_KEYS = ("method", "out", "data", "optim", "train", "mean_teacher", "mona")


def is_saved_config(values: dict[str, Any]) -> bool:
    """Whether a YAML mapping is a run's saved `config.yaml` (`SAVED_CONFIG_KEYS`), not a preset or a user's file."""
    return all(key in values for key in SAVED_CONFIG_KEYS) and all(
        isinstance(values[key], dict) for key in SAVED_CONFIG_KEYS[2:])


def load_config(sources: list[str | Path] = (), overrides: list[str] = (), base: Config | None = None) -> Config:
    """Build a Config: defaults (or `base`), then each preset/file in order, then overrides. A
    source that is a saved run config is read as it ran (`is_saved_config`, `with_added_keys`)."""
    config = base if base is not None else Config()
    for source in sources:
        values = _read_yaml(source)
        _apply(config, with_added_keys(values) if is_saved_config(values) else values)
    for text in overrides:
        _apply(config, _parse_override(text))
    validate(config)
    return config


# Keys added after runs were published, each with the value those earlier runs trained with: a
# saved config that lacks one is read with that value, not today's default, so a resumed or
# re-read run stays the run it was (the spec-faithful MONA defaults of 2026-11-30).
ADDED_KEYS: dict[str, Any] = {
    "mona.local_queue_size": 36, "mona.entropy_split": "one_cut", "mona.diffeomorphism": "rms_cells",
    "mona.eqv_labeled": False, "mona.eqv_tps_centres": "regular",
}


def with_added_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config's values, completed with `ADDED_KEYS` where it predates them."""
    values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
    for dotted, earlier in ADDED_KEYS.items():
        section, key = dotted.split(".")
        if isinstance(values.get(section), dict):
            values[section].setdefault(key, earlier)
    return values


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config saved by `to_dict` (e.g. from a checkpoint)."""
    config = Config()
    _apply(config, with_added_keys(values))
    return config


def load_run_config(path: Path, overrides: list[str] = ()) -> Config:
    """A run's saved `config.yaml` (keys it predates filled as it ran), then overrides."""
    return load_config([], overrides, base=config_from_dict(_read_yaml(path)))


# (low, high) bounds of numeric keys, inclusive; None = unbounded. Checked when a config is
# resolved, before any folder is made, so a bad value costs nothing.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.image_size": (16, 4096), "data.batch_labeled": (1, None), "data.batch_unlabeled": (1, None),
    "data.num_classes": (0, 255),
    "optim.lr": (1e-12, 10), "optim.momentum": (0, 0.999999), "optim.weight_decay": (0, 1),
    "optim.poly_power": (0, 10),
    "train.iterations": (1, None), "train.val_every": (1, None), "train.log_every": (1, None),
    "train.checkpoint_every": (0, None), "train.seed": (0, 2**31 - 1),
    "mean_teacher.ema": (0, 1), "mean_teacher.consistency": (0, None), "mean_teacher.rampup": (0, 1),
    "mean_teacher.noise": (0, None),
    "mona.pretrain_iterations": (0, None), "mona.pretrain_batch_labeled": (1, None),
    "mona.pretrain_batch_unlabeled": (1, None), "mona.finetune_batch_labeled": (1, None),
    "mona.finetune_batch_unlabeled": (1, None), "mona.ema": (0, 1), "mona.queue_size": (1, None),
    "mona.local_queue_size": (0, None),
    "mona.tau_student": (1e-6, None), "mona.tau_teacher": (1e-6, None), "mona.global_weight": (0, None),
    "mona.local_weight": (0, None), "mona.patch_size": (1, None), "mona.patch_stride": (1, None),
    "mona.contrast_weight": (0, None), "mona.unsup_weight": (0, None), "mona.eqv_weight": (0, None),
    "mona.nn_weight": (0, None), "mona.rampup": (0, 1), "mona.confidence_threshold": (0, 1),
    "mona.eqv_confidence": (0, 1), "mona.num_queries": (1, None), "mona.num_negatives": (1, None),
    "mona.contrast_temperature": (1e-6, None), "mona.bank_size": (1, None), "mona.background_bank_size": (1, None),
    "mona.embed_dim": (1, None), "mona.representation_stride": (1, 16), "mona.nn_bank_size": (1, None),
    "mona.nn_topk": (1, None),
    "unimatch.confidence_threshold": (0, 1), "unimatch.feature_dropout": (0, 0.99), "unimatch.strong_weight": (0, None),
    "unimatch.fp_weight": (0, None),
    "bcp.pretrain_iterations": (0, None), "bcp.ema": (0, 1), "bcp.unlabeled_weight": (0, None),
    "bcp.box_fraction": (0.01, 0.99),
    "abd.pretrain_iterations": (0, None), "abd.ema": (0, 1), "abd.unlabeled_weight": (0, None),
    "abd.box_fraction": (0.01, 0.99), "abd.patch_grid": (1, 64), "abd.top_patches": (1, None),
    "abd.adaptive_probability": (0, 1), "abd.cutout_probability": (0, 1), "abd.jitter_strength": (0, 1),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "train.device": ("auto", "cpu", "cuda"), "train.amp_dtype": ("bf16", "fp16"),
    "mona.stage": ("both", "pretrain", "finetune"), "mona.eqv_pixels": ("foreground", "confident", "balanced"),
    "mona.entropy_split": ("spec", "one_cut"), "mona.diffeomorphism": ("advmorph", "rms_cells"),
    "mona.eqv_tps_centres": ("moved", "regular"),
    "bcp.background_dice": ("masked", "unmasked"), "abd.background_dice": ("masked", "unmasked"),
}


def config_value(config: Config, dotted: str) -> Any:
    """The value of a dotted key (`optim.lr`)."""
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _bounds(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {low:g}"
    return f"in [{low:g}, {high:g}]"


def validate(config: Config) -> None:
    """Every value against its range or choices: one error naming the key, the value and what is allowed."""
    from mona.methods import METHODS  # the registry; it imports no method module until one is built

    if config.method not in METHODS:
        raise MonaError(f"unknown method {config.method!r} ({', '.join(METHODS)})")
    if config.mona.init_from and config.method != "mona":
        raise MonaError(f"mona.init_from starts MONA's stage 2 from another run's stage 1; method {config.method} "
                        "does not read it: remove mona.init_from (--init RUN starts any method from a finished run)")
    if config.init and config.mona.init_from:
        raise MonaError("init and mona.init_from both say where training starts: give one (--init RUN starts from "
                        "a finished run's best model, mona.init_from from another run's stage 1)")
    if config.init and config.method == "mona" and config.mona.stage == "pretrain":
        raise MonaError("init starts MONA's stage 2 from a finished run, and mona.stage=pretrain trains only stage "
                        "1: drop one of them")
    for key, allowed in CHOICES.items():
        if config_value(config, key) not in allowed:
            raise MonaError(f"{key} must be one of {', '.join(allowed)}, not {config_value(config, key)!r}")
    for key, (low, high) in RANGES.items():
        value = config_value(config, key)
        if not (low is None or value >= low) or not (high is None or value <= high):
            raise MonaError(f"{key}={value!r} is out of range: it must be {_bounds(low, high)}")
    labeled = config.data.labeled
    if labeled != "all" and not (labeled.isdigit() and int(labeled) > 0):
        raise MonaError(f"data.labeled must be a positive number of patients or 'all', not {labeled!r}")
    size = config.data.image_size
    if size % 16:
        raise MonaError(f"data.image_size must be a multiple of 16 (the UNet pools 4 times), not {size}")
    mona = config.mona
    if config.method == "mona" and mona.patch_size > size:
        raise MonaError(f"mona.patch_size={mona.patch_size} is out of range: it must be <= data.image_size ({size})")
    if size % mona.representation_stride:
        raise MonaError(f"mona.representation_stride={mona.representation_stride} must divide data.image_size "
                        f"({size})")
    if config.method == "abd" and size % config.abd.patch_grid:
        raise MonaError(f"abd.patch_grid={config.abd.patch_grid} must divide data.image_size ({size})")
    if config.abd.top_patches > config.abd.patch_grid ** 2:
        raise MonaError(f"abd.top_patches={config.abd.top_patches} is out of range: it must be <= "
                        f"abd.patch_grid^2 ({config.abd.patch_grid ** 2})")
    if mona.stage == "pretrain" and not mona.pretrain:
        raise MonaError("mona.stage=pretrain with mona.pretrain=false would train nothing")


def save_config(config: Config, path: Path) -> None:
    from mona.data.io import atomic_path  # not at the top: the config module stays free of h5py and nibabel

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
