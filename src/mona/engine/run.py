"""Entry points shared by the CLI, the demo and the experiment grid: train a run, evaluate a run."""

from __future__ import annotations

from pathlib import Path

import torch

from mona.config import Config, config_from_dict, load_config
from mona.data.ssl4mis import dataset_info, load_train_data, load_volumes
from mona.engine.checkpoint import load_checkpoint, load_weights
from mona.engine.trainer import Stage, Trainer, resolve_amp, resolve_device
from mona.errors import MonaError
from mona.evaluation.inference import predict_volume
from mona.evaluation.metrics import score_case
from mona.evaluation.postprocess import labels_from_probabilities
from mona.evaluation.report import summarize, write_csv, write_json
from mona.methods import build_method
from mona.models.unet import UNet


def train(config: Config, resume: bool = False) -> dict:
    """Train `config.method` into `config.out`; with `resume`, continue from its `last.pt`."""
    if config.method == "mona":
        from mona.methods.mona import train_mona

        return train_mona(config, resume=resume)
    info = dataset_info(config.data.root, config.data.num_classes)
    data = load_train_data(info, config.data.labeled, config.data.image_size)
    val = load_volumes(info, "val")
    torch.manual_seed(config.train.seed)  # the initial weights: two runs with the same seed are identical
    method = build_method(config, info.num_classes)
    stage = Stage(config.train.iterations, config.data.batch_labeled, config.data.batch_unlabeled)
    return Trainer(config, method, data, val, Path(config.out), stage, info).fit(resume=resume)


def resume_config(run_dir: str | Path, overrides: list[str] = ()) -> Config:
    """The config a run folder was started with (its `config.yaml`), plus overrides."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise MonaError("not a run folder (no config.yaml): nothing to resume", run_dir)
    config = load_config([path], overrides)
    config.out = str(run_dir)
    return config


def run_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The file of a run's `best` or `last` checkpoint (RUN/<name>.pt, or RUN/finetune/<name>.pt for
    a MONA run), or `checkpoint` itself when it names a file."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        return Path(checkpoint)
    path = run_dir / f"{checkpoint}.pt"
    if not path.is_file() and (run_dir / "finetune").is_dir():
        return run_dir / "finetune" / f"{checkpoint}.pt"
    return path


def load_run_model(run_dir: str | Path, checkpoint: str = "best") -> tuple[torch.nn.Module, dict]:
    """The student network of a run's checkpoint (`best`, `last` or a file path), and the checkpoint."""
    path = run_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)
    model = UNet(1, state["num_classes"])
    weights = {key[len("model."):]: value for key, value in state["method"].items() if key.startswith("model.")}
    load_weights(model, weights, path)
    return model.to(memory_format=torch.channels_last), state  # ~1.5x faster convolutions on CPUs


def evaluate_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str = "auto",
                 amp: bool | None = None, largest_component: bool = False) -> dict:
    """Score a run's checkpoint on a split; writes `eval_<split>_<checkpoint>/{cases.csv,summary.json}`
    (`..._largest/` when each class keeps only its largest connected component)."""
    run_dir = Path(run_dir)
    model, state = load_run_model(run_dir, checkpoint)
    config = config_from_dict(state["config"])
    info = dataset_info(config.data.root, state["num_classes"])
    target = resolve_device(device)
    model.to(target)
    rows = []
    for volume in load_volumes(info, split):
        probs = predict_volume(model, volume.image, state["image_size"], target,
                               amp=resolve_amp(config, target) if amp is None else amp)
        labels = labels_from_probabilities(probs, state["num_classes"], largest_component)
        rows += score_case(labels, volume.label, state["num_classes"], volume.spacing, volume.name)
    summary = summarize(rows, state.get("class_names") or info.class_names)
    summary.update(split=split, checkpoint=checkpoint, iteration=state["iteration"], run=str(run_dir),
                   largest_component=largest_component)
    out = run_dir / f"eval_{split}_{checkpoint}{'_largest' if largest_component else ''}"
    write_csv(rows, out / "cases.csv")
    write_json(summary, out / "summary.json")
    return summary
