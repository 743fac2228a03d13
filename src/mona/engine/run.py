"""Entry points shared by the CLI, the demo, the experiment grid and the Python API: train a
run (every stage its method declares), resume it, load its model, evaluate it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mona.config import Config, config_from_dict, config_value, load_run_config, save_config
from mona.data.io import atomic_path
from mona.data.ssl4mis import dataset_info, load_train_data, load_volumes, training_volumes
from mona.engine import distributed
from mona.engine.checkpoint import load_checkpoint, load_weights, student_weights
from mona.engine.environment import describe
from mona.engine.run_folder import (
    RunLock,
    RunLog,
    claim,
    is_run_folder,
    record_stages,
    run_root,
    stage_folders,
    unfinished_stages,
)
from mona.engine.trainer import Trainer, precision, resolve_amp, resolve_device
from mona.errors import MonaError, RunInterrupted
from mona.evaluation.inference import predict_volume
from mona.evaluation.metrics import score_case
from mona.evaluation.postprocess import choose_largest_component, labels_from_probabilities
from mona.evaluation.report import summarize, write_csv, write_json
from mona.methods import method_stages
from mona.methods.base import Method, Stage
from mona.models.unet import UNet

# What a resumed run may not change: it would continue one setup's weights under another.
FIXED_ON_RESUME = ("method", "data.root", "data.labeled", "data.image_size", "data.num_classes", "train.seed",
                   "init")


def absolute_paths(config: Config) -> Config:
    """Store the data folder, run folder and any run it starts from as absolute paths, so a run
    folder works from any working directory."""
    for section, key in (("data", "root"), (None, "out"), (None, "init"), ("mona", "init_from")):
        owner = getattr(config, section) if section else config
        if getattr(owner, key):
            setattr(owner, key, str(Path(getattr(owner, key)).expanduser().absolute()))
    return config


def resume_config(run_dir: str | Path, overrides: list[str] = ()) -> Config:
    """The config a run folder was started with (its `config.yaml`), plus overrides that keep it
    the same run: more iterations, another device, a moved dataset's new place."""
    root = run_root(run_dir)
    path = root / "config.yaml"
    if not path.is_file():
        raise MonaError("not a run folder (no config.yaml): nothing to resume", run_dir)
    saved = absolute_paths(load_run_config(path))
    config = absolute_paths(load_run_config(path, overrides))
    config.out = str(root)
    for key in FIXED_ON_RESUME:
        old, new = config_value(saved, key), config_value(config, key)
        if key == "data.root" and old != new and not Path(old).is_dir():
            continue  # the dataset moved: its new place is accepted
        if old != new:
            raise MonaError(f"--resume continues a run as it was started: {key} is {old!r} there, not {new!r} "
                            "(start a new run with another --out)", path)
    return config


def check_dataset(config: Config, run_dir: Path) -> None:
    """A clear error when a run's dataset is no longer where its config says."""
    if not Path(config.data.root).is_dir():
        raise MonaError(f"the run's dataset folder {config.data.root} does not exist; if it moved, give its new "
                        f"place with --data (mona train --resume {run_dir} --data NEW, or mona evaluate {run_dir} "
                        "--data NEW)", run_dir / "config.yaml")


def _stage_checkpoint(source: str, run_dir: Path, checkpoint: str = "last") -> Path:
    """The checkpoint that starts a stage: an earlier stage of this run (by name), a run folder
    (its first stage) or a checkpoint file; `checkpoint` ("last" or "best") picks the stage's file."""
    path = Path(source)
    if not path.is_absolute() and (run_dir / source).is_dir():
        path = run_dir / source / f"{checkpoint}.pt"
    elif path.is_dir():
        path = stage_folders(path)[0] / f"{checkpoint}.pt"
    if not path.is_file():
        raise MonaError(f"this stage starts from the student of {source!r}, which has no checkpoint "
                        "(train that stage first)", path)
    return path


def init_checkpoint(source: str | Path) -> Path:
    """The checkpoint `--init` starts from: a finished run's best model on val (its last stage's
    `best.pt`), or a checkpoint file as given (also an unfinished run's)."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise MonaError("--init: no such run folder or checkpoint file", source)
    root = run_root(path)
    if not is_run_folder(root):
        raise MonaError("--init: not a run folder (no config.yaml or checkpoint); give the folder `mona train "
                        "--out` wrote, or a checkpoint file", source)
    left = unfinished_stages(root)
    if left:
        raise MonaError(f"--init starts from a finished run, and this one is unfinished ({left}): finish it "
                        f"(mona train --resume {root}), or start from its checkpoint so far (--init "
                        f"{run_checkpoint(root, 'best')})", source)
    path = run_checkpoint(root, "best")
    if not path.is_file():
        raise MonaError("--init: this run has no best checkpoint", path)
    return path


def init_stages(stages: list[Stage], init: str) -> list[Stage]:
    """What a run started from another run's model (`init`, a checkpoint file) trains: its method's
    last stage, from that model. An earlier stage (MONA's, BCP's and ABD's stage 1) only makes the
    student the last stage starts from, and a finished model takes its place."""
    return [dataclasses.replace(stages[-1], init_from=init)] if init else stages


def check_init(path: Path, num_classes: int, root: str) -> dict:
    """The checkpoint a run starts from, refused when it segments another number of classes than the dataset."""
    state = load_checkpoint(path)
    if state["num_classes"] != num_classes:
        raise MonaError(f"--init: this run segments {state['num_classes']} classes and the dataset {root} "
                        f"{num_classes}: start from a run trained on the same classes", path)
    return state


def trained_cases(root: Path, labeled: str) -> tuple[set[str], set[str]]:
    """The volumes of dataset `root` that trained a run of budget `labeled`: (with their masks, as
    unlabeled scans); empty when the dataset is gone or no longer fits that budget."""
    meta = root / "mona.json"
    try:
        unlabeled = json.loads(meta.read_text()).get("unlabeled_cases") or [] if meta.is_file() else []
        budget, volumes = training_volumes(root, labeled, unlabeled)
    except (MonaError, OSError, ValueError):
        return set(), set()
    return set(budget), set(volumes) - set(budget)


def seen_val_cases(state: dict, val: list[str]) -> list[str]:
    """A note when val cases trained the run a run starts from (`state`, its checkpoint), as when a
    dataset prepared again with more masks splits its patients anew: their val Dice may overstate."""
    data = state["config"]["data"]
    masked, unmasked = trained_cases(Path(data["root"]), str(data["labeled"]))
    parts = [f"{len(names)} {how} ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})"
             for how, names in (("with their masks", sorted(set(val) & masked)),
                                ("as unlabeled scans", sorted(set(val) & unmasked - masked))) if names]
    if not parts:
        return []
    return [f"note: val cases trained the run this one starts from (its dataset {data['root']}): {', '.join(parts)}; "
            "val Dice, and the best checkpoint chosen by it, may overstate how the model segments unseen scans"]


def _start_from(method: Method, stage: Stage, run_dir: Path, state: dict | None = None) -> tuple[Path, dict]:
    """The method's networks start from an earlier student (`Method.start_from`); returns the
    checkpoint's path and contents (`state`, when the caller has read it already)."""
    path = _stage_checkpoint(stage.init_from, run_dir, stage.init_checkpoint)
    state = load_checkpoint(path) if state is None else state
    method.start_from(student_weights(state, path), lambda module, weights: load_weights(module, weights, path))
    return path, state


def carry_networks(method: Method, saved: dict[str, torch.Tensor], path: Path) -> tuple[list[str], list[str]]:
    """Load each network of `method` besides the student (teacher, heads, ABD's `model_2`) that
    `saved` (a checkpoint's `method`) holds under the same name with the same shapes; the others
    stay as `Method.start_from` set them. Returns the names loaded and the names kept."""
    own: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in method.weights().items():  # the networks, without memories (queues, banks)
        name, _, rest = key.partition(".")
        own.setdefault(name, {})[rest] = value
    loaded, kept = [], []
    for name, weights in own.items():
        if name == "model":
            continue
        theirs = {key[len(name) + 1:]: value for key, value in saved.items() if key.startswith(f"{name}.")}
        fits = all(key in theirs and theirs[key].shape == value.shape for key, value in weights.items())
        if fits:
            load_weights(getattr(method, name), theirs, path)
        (loaded if fits else kept).append(name)
    return loaded, kept


def init_line(path: Path, state: dict, loaded: list[str], kept: list[str], skipped: list[str]) -> str:
    """What `--init` loaded, said when the run starts."""
    best = (state.get("metrics") or {}).get("best") or {}
    dice = f", val Dice {best['dice']:.4f}" if "dice" in best else ""
    line = (f"init: loaded {', '.join(['student', *loaded])} from {path} ({state['config'].get('method', '?')} "
            f"run, iteration {state.get('iteration', '?')}{dice})")
    if kept:
        line += f"; not in that run: {', '.join(kept)} (set as when a stage starts from an earlier student)"
    if skipped:
        line += f"; {' and '.join(f'stage {name}' for name in skipped)} skipped: this model takes its place"
    return line


def _saved_states(run_dir: Path, stages: list[Stage]) -> dict[str, dict | None]:
    """Each stage's `last.pt`, read once (None where there is none yet). A resumed stage may be
    lengthened, not cut below the iterations it has already run."""
    states = {}
    for stage in stages:
        last = (run_dir / stage.name if stage.name else run_dir) / "last.pt"
        states[stage.name] = load_checkpoint(last) if last.is_file() else None
        done = states[stage.name]["iteration"] if states[stage.name] else 0
        if done > stage.iterations:
            raise MonaError(f"this stage has already run {done} iterations, more than the {stage.iterations} now "
                            "asked for; --resume may add iterations, not remove them", last)
    return states


def _record_environment(run_dir: Path, record: dict) -> None:
    """Append this start's machine and software to `RUN/environment.json` (a resumed run may move)."""
    path = run_dir / "environment.json"
    try:
        records = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        records = []
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(records + [record], indent=2) + "\n")


def train(config: Config, resume: bool = False, overwrite: bool = False, continue_with: str = "") -> dict:
    """Train every stage of `config.method` into the run folder `config.out`; returns the last
    stage's metrics (`best` and `last` val records).

    A new run needs an empty folder (`overwrite` deletes an earlier run there); `resume`
    continues the run's unfinished stages from their `last.pt`. Finished stages are skipped.
    `continue_with` is the command an interrupted run's message suggests (default: `mona train
    --resume RUN`).
    """
    absolute_paths(config)
    run_dir = Path(config.out)
    if config.init and not resume:
        config.init = str(init_checkpoint(config.init).absolute())  # the origin config.yaml records
    declared = method_stages(config)
    stages = init_stages(declared, config.init)
    skipped = [stage.name for stage in declared[:-1]] if config.init else []
    device = distributed.setup(resolve_device(config.train.device))  # joins the process group under torchrun
    main = distributed.is_main()
    if resume:
        check_dataset(config, run_dir)
    info = dataset_info(config.data.root, config.data.num_classes)
    origin = check_init(Path(config.init), info.num_classes, config.data.root) if config.init and not resume else None
    created = main and not run_dir.exists()
    with RunLock(run_dir) if main else nullcontext():
        say = RunLog(run_dir / "train.log" if main else None)
        try:
            if main:
                claim(run_dir, resume, overwrite)
            distributed.barrier()  # other ranks look for checkpoints only after rank 0 has claimed the folder
            saved = _saved_states(run_dir, stages)
            data = load_train_data(info, config.data.labeled, config.data.image_size)
            val = load_volumes(info, "val")
            if main:
                save_config(config, run_dir / "config.yaml")  # only now: a refused resume keeps the run's config
                record_stages(run_dir, [{"name": s.name, "iterations": s.iterations} for s in stages])
                _record_environment(run_dir, {**describe(device, precision(config, device)), "resume": resume})
                if config.train.amp and not resolve_amp(config, device):
                    say("note: train.amp: bf16 autocast is slower than fp32 on this CPU (it has neither AMX "
                        "nor AMD's AVX512-BF16); training in fp32")
                if len(stages) > 1:
                    say(stage_plan(stages))
                for line in seen_val_cases(origin, [volume.name for volume in val]) if origin else []:
                    say(line)
        except BaseException:
            if created:  # a run that failed before it began leaves no folder behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        result: dict = {}
        bests: dict[str, dict] = {}  # each stage's best val record
        for index, stage in enumerate(stages):
            stage_dir = run_dir / stage.name if stage.name else run_dir
            state = saved.pop(stage.name)
            if state is not None and state["iteration"] >= stage.iterations:
                result = {"best": state["metrics"]["best"], "last": state["metrics"]["val"]}
                bests[stage.name] = result["best"]
                continue
            torch.manual_seed(config.train.seed + 1_000_003 * index)  # a stage's initial weights: fixed by the seed
            method = stage.build(info.num_classes)
            if config.init:  # the teacher is a trained one (--init's, or its student's copy): the EMA warm-up
                method.ema_warmup = False  # (decay 0 at step 0) would overwrite it with the student
            if stage.init_from and state is None:
                path, source = _start_from(method, stage, run_dir, origin)  # origin: --init's, read once
                if config.init:
                    say(init_line(path, source, *carry_networks(method, source["method"], path), skipped))
            try:
                result = Trainer(config, method, data, val, stage_dir, stage, info, say).fit(state)
            except RunInterrupted as stop:
                resumable = any((folder / "last.pt").is_file() for folder in stage_folders(run_dir))
                hint = (f"Continue with: {continue_with or f'mona train --resume {run_dir}'}" if resumable
                        else "Nothing was saved yet: start it again with --overwrite.")
                say.record(f"{stop} {hint}")
                raise RunInterrupted(f"{stop} {hint}") from None
            bests[stage.name] = result["best"]
        best = result["best"]
        say(f"done: {run_dir} (best val Dice {best['dice']:.4f} at iteration {best['iteration']})")
        for line in earlier_stage_notes(run_dir, bests):
            say(line)
        if main:
            _choose_postprocessing(run_dir, device, say, info.class_names)
    return result


def stage_plan(stages: list[Stage]) -> str:
    """What a run of several stages trains, said when it starts (`--iterations` sets only some of them)."""
    return ("stages: " + ", then ".join(f"{stage.name} {stage.iterations} iterations" for stage in stages)
            + "; each stage's val Dice scores its student's segmentation of the val volumes (0 while it predicts "
            "only background)")


def earlier_stage_notes(run_dir: Path, bests: dict[str, dict]) -> list[str]:
    """A note for each earlier stage whose best val Dice is above the last stage's: `predict` and
    `evaluate` use the last stage's best checkpoint, not it."""
    *earlier, last = bests.items()
    folder = Path(last[0]) / "best.pt"
    return [f"note: stage {name}'s best val Dice {best['dice']:.4f} (iteration {best['iteration']}) is above "
            f"stage {last[0]}'s {last[1]['dice']:.4f}; predict and evaluate use {folder}, the last stage's; "
            f"for stage {name}'s: mona predict --checkpoint {run_dir / name / 'best.pt'}"
            for name, best in earlier if best["dice"] > last[1]["dice"]]


def _choose_postprocessing(run_dir: Path, device: torch.device, say: RunLog, class_names: list[str]) -> None:
    """Score the best checkpoint on val (RUN/eval_val_best/), which writes RUN/postprocessing.json:
    the classes whose largest connected component `mona predict` keeps by default."""
    evaluate_run(run_dir, "val", "best", str(device))
    choice = json.loads((run_dir / "postprocessing.json").read_text())
    dice = ", ".join(f"{class_names[int(c)]} {100 * raw:.1f} -> {100 * kept:.1f}"
                     for c, (raw, kept) in choice["val_dice"].items())
    classes = choice["largest_component"]
    kept = ", ".join(class_names[c] for c in classes)
    verb = "keeps only its" if len(classes) == 1 else "keep only their"
    say(f"postprocessing chosen on val: {kept} {verb} largest connected component" if kept else
        "postprocessing chosen on val: none, keeping only the largest connected component raised no class's val Dice")
    say(f"  val Dice raw -> largest component: {dice}")


def run_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The file of a run's `best` or `last` checkpoint (in its last stage's folder), or
    `checkpoint` itself when it names a file."""
    if checkpoint not in ("best", "last"):
        return Path(checkpoint)
    return stage_folders(run_root(run_dir))[-1] / f"{checkpoint}.pt"


def load_run_model(run_dir: str | Path, checkpoint: str = "best") -> tuple[torch.nn.Module, dict]:
    """The student network of a run's checkpoint (`best`, `last` or a file path), and the checkpoint."""
    if not Path(run_dir).is_dir():
        raise MonaError("run folder not found", run_dir)
    root = run_root(run_dir)
    if checkpoint in ("best", "last") and not (is_run_folder(root) or (root / f"{checkpoint}.pt").is_file()):
        what = "a prepared dataset (mona.json), " if (Path(run_dir) / "mona.json").is_file() else ""
        raise MonaError(f"not a run folder: {what}no config.yaml or checkpoint; give the folder `mona train --out` "
                        "wrote", run_dir)
    path = run_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)
    return checkpoint_unet(state, student_weights(state, path), path), state


def checkpoint_unet(state: dict, weights: dict[str, torch.Tensor], path: Path) -> UNet:
    """A UNet of the checkpoint's class count holding `weights` (read from `path`), channels_last."""
    model = UNet(1, state["num_classes"])
    load_weights(model, weights, path)
    return model.to(memory_format=torch.channels_last)  # ~1.5x faster convolutions on CPUs


POSTPROCESS = ("none", "val", "all")  # whose largest connected component is kept: see `postprocessed_classes`
POSTPROCESS_FOLDER = {"none": "", "val": "_postprocessed", "all": "_largest"}


def postprocessed_classes(run_dir: str | Path, postprocess: str, num_classes: int, iteration: int) -> tuple[int, ...]:
    """The classes that keep only their largest connected component: none, those chosen on val
    (RUN/postprocessing.json, written when training ends, for the best checkpoint; none for a run
    without one or for a checkpoint of another `iteration`, which the choice was not made for), or all."""
    if postprocess not in POSTPROCESS:
        raise MonaError(f"postprocess must be one of {', '.join(POSTPROCESS)}, got {postprocess!r}")
    if postprocess == "all":
        return tuple(range(1, num_classes))
    path = run_root(run_dir) / "postprocessing.json"
    if postprocess == "none" or not path.is_file():
        return ()
    try:
        choice = json.loads(path.read_text())
        classes = tuple(int(c) for c in choice["largest_component"])
        chosen_for = int(choice.get("checkpoint_iteration", iteration))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MonaError(f"unreadable ({error}); delete it, then `mona evaluate RUN --split val` writes it again",
                        path) from None
    if chosen_for != iteration:
        return ()
    if not all(0 < c < num_classes for c in classes):
        raise MonaError(f"classes {list(classes)} outside 1..{num_classes - 1}", path)
    return classes


def evaluate_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str = "auto",
                 amp: bool | None = None, postprocess: str = "none", data: str | Path | None = None,
                 progress: bool = False, return_labels: bool = False) -> dict | tuple[dict, list[np.ndarray]]:
    """Score a run's checkpoint on a split of its dataset (or of `data`, for a moved dataset);
    writes `eval_<split>_<checkpoint>/{cases.csv,summary.json}` and returns the summary, with
    `return_labels` also each volume's label map (in the split's order), so a caller need not
    predict again. `postprocess` (see `postprocessed_classes`) other than "none" scores into
    `..._postprocessed/` (val's choice) or `..._largest/` (every class). Scoring val with the best
    checkpoint, raw, also makes val's choice: RUN/postprocessing.json (`choose_largest_component`).
    """
    run_dir = run_root(run_dir)
    model, state = load_run_model(run_dir, checkpoint)
    largest_component = postprocessed_classes(run_dir, postprocess, state["num_classes"], state["iteration"])
    config = config_from_dict(state["config"])
    if data is not None:
        config.data.root = str(Path(data).absolute())
    check_dataset(config, run_dir)
    info = dataset_info(config.data.root, state["num_classes"])
    target = resolve_device(device)
    model.to(target)
    volumes = load_volumes(info, split)
    rows, label_maps = [], []
    for volume in tqdm(volumes, desc=f"scoring {split}", unit="volume", disable=not progress, leave=False):
        probs = predict_volume(model, volume.image, state["image_size"], target,
                               amp=resolve_amp(config, target) if amp is None else amp)
        label_maps.append(labels_from_probabilities(probs, largest_component))
        rows += score_case(label_maps[-1], volume.label, state["num_classes"], volume.spacing, volume.name)
    summary = summarize(rows, state.get("class_names") or info.class_names)
    summary.update(split=split, checkpoint=checkpoint, iteration=state["iteration"], run=str(run_dir),
                   postprocess=postprocess, largest_component=list(largest_component))
    out = run_dir / f"eval_{split}_{checkpoint}{POSTPROCESS_FOLDER[postprocess]}"
    write_csv(rows, out / "cases.csv")
    write_json(summary, out / "summary.json")
    if (split, checkpoint, postprocess) == ("val", "best", "none"):
        choice = choose_largest_component(label_maps, [v.label for v in volumes], state["num_classes"])
        write_json({**choice, "checkpoint_iteration": state["iteration"]}, run_dir / "postprocessing.json")
    return (summary, label_maps) if return_labels else summary
