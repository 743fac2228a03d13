"""The one training loop: every method is trained, validated, checkpointed and resumed here.

Iteration-based SGD with a poly schedule, optional EMA teacher, bf16/fp16 autocast and
channels_last; validation on whole val volumes (3D mean Dice) every `val_every` iterations.
`best.pt` (best on val) holds the networks' weights and the run's metadata, not the optimiser
state and memory banks; `last.pt` holds the complete state that --resume reads. Both are written
atomically, `last.pt` also every `checkpoint_every` seconds and when the run is stopped (Ctrl-C
or SIGTERM finish the current step, save, and exit 130). Every random draw of step t comes
from generators seeded with (seed, t), so a run resumed from `last.pt` is identical to one
that was never interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from mona.config import Config
from mona.data.ssl4mis import DatasetInfo, TrainData, Volume3D, sample_indices
from mona.engine import distributed
from mona.engine.checkpoint import load_weights, save_checkpoint
from mona.engine.environment import cpu_flags, cpu_vendor
from mona.engine.schedule import ema_momentum, ema_update, poly_lr
from mona.errors import MonaError, RunInterrupted
from mona.evaluation.inference import autocast, dice_per_class, predict_volume
from mona.evaluation.postprocess import labels_from_probabilities
from mona.methods.base import Method, Stage


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MonaError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA with bf16, or a CPU with AMX, or an AMD CPU
    with AVX512-BF16.

    Without these oneDNN emulates bf16 and a step is ~10x slower (AVX2-only EPYCs), and AVX512-BF16
    alone is not enough on Intel: on an Intel Xeon with AVX512-BF16 but no AMX a `cpu-small` step was
    no faster in bf16, mostly slower (up to 1.6x), while the AMD EPYC with AVX512-BF16 ran it in about
    a third of other EPYCs' fp32 time (`benchmarks/train_speed.py`, docs/performance.md).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    return "amx_bf16" in flags or ("avx512_bf16" in flags and cpu_vendor() == "AuthenticAMD")


def resolve_amp(config: Config, device: torch.device) -> bool:
    """`train.amp`, switched off where bf16 would slow training down (the engine says so once per run)."""
    if config.train.amp and config.train.amp_dtype == "bf16" and not fast_bf16(device):
        return False
    return config.train.amp


def precision(config: Config, device: torch.device) -> str:
    """The precision a run trains in: bf16 or fp16 autocast, or fp32."""
    return config.train.amp_dtype if resolve_amp(config, device) else "fp32"


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """The seed of one step's random draws; each data-parallel rank draws its own batches."""
    return seed * 1_000_003 + iteration + rank * 7_919_000_003


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM set a flag that the loop reads after each step (data-parallel
    runs: after the next logging step, where the ranks agree), so a stopped run saves a
    consistent `last.pt`; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self, say: Callable[[str], None]):
        self.requested = False
        self.say = say

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.say("stopping after this step (Ctrl-C again to stop at once, without saving)")

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def validate(method: Method, volumes: list[Volume3D], config: Config, device: torch.device,
             amp: bool) -> dict[str, float]:
    """Mean 3D Dice over val volumes and foreground classes, predicted by the student."""
    scores = []
    for volume in volumes:
        probs = predict_volume(method.model, volume.image, config.data.image_size, device, amp=amp)
        scores.append(dice_per_class(labels_from_probabilities(probs), volume.label,
                                     method.num_classes))
    per_class = np.mean(scores, axis=0)
    return {"dice": float(per_class.mean()), **{f"dice_class{c + 1}": float(v) for c, v in enumerate(per_class)}}


class Trainer:
    """Trains one stage of a method into `stage_dir`; `say` prints and logs the run's messages."""

    def __init__(
        self,
        config: Config,
        method: Method,
        data: TrainData,
        val_volumes: list[Volume3D],
        stage_dir: Path,
        stage: Stage,
        info: DatasetInfo,
        say: Callable[[str], None] = print,
    ):
        self.config, self.method, self.data, self.val_volumes = config, method, data, val_volumes
        self.run_dir, self.stage, self.info = Path(stage_dir), stage, info
        self.say = say
        self.device = distributed.setup(resolve_device(config.train.device))
        if method.uses_unlabeled and data.unlabeled is None:
            raise MonaError(f"method {config.method} needs unlabeled slices, but every training slice is labeled")

    def _checkpoint_state(self, iteration: int) -> dict:
        """Everything `last.pt` keeps to resume at `iteration`: weights, optimiser, scaler, scores, time."""
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "iteration": iteration,
            "total_iterations": self.stage.iterations,
            "config": self.config.to_dict(),
            "method_name": self.method.name,
            "num_classes": self.method.num_classes,
            "class_names": self.info.class_names,
            "image_size": self.config.data.image_size,
            "preprocessing": self.info.preprocessing,
            "metrics": {"val": self.last_val, "best": self.best, **self.timing},
        }

    def _log(self, writer, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("iteration", "split"):
                writer.add_scalar(f"{record['split']}/{key}", value, record["iteration"])

    def _truncate_log(self, iteration: int) -> None:
        """Drop log lines written after the checkpoint a resumed run starts from, and a last line
        torn by a killed process (with a warning)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except ValueError:
                if number < len(lines):
                    raise MonaError(f"line {number} is not JSON; only a torn last line is dropped", path) from None
                self.say(f"warning: {path}: dropped a torn last line (the process was killed while writing it)")
                continue
            if record["iteration"] <= iteration:
                kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))

    def fit(self, state: dict | None = None) -> dict:
        """Train to the end, from the start or from `state` (this stage's `last.pt`, already read);
        returns the final metrics."""
        from torch.utils.tensorboard import SummaryWriter

        method, stage = self.method, self.stage
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.main, self.parallel, self.rank = distributed.is_main(), distributed.active(), distributed.rank()
        self._place_on_device()
        self._build_optimizer()
        start = self._restore(state)
        step_model = torch.compile(method.training_step) if self.config.train.compile else method.training_step
        writer = SummaryWriter(str(self.run_dir / "tb")) if self.main else None
        total = stage.iterations
        bar = tqdm(
            range(start, total), initial=start, total=total,
            disable=not (self.config.train.progress and self.main), desc=method.name, dynamic_ncols=True, leave=False,
        )
        window = LossWindow()
        completed, self.saved_at, self.last_save = start, start, time.perf_counter()
        stop = StopRequest(self.say if self.main else lambda message: None)
        method.train()
        try:
            with stop.installed():
                for iteration in bar:
                    tick = time.perf_counter()
                    lr = self._set_learning_rate(iteration / total)
                    labeled, unlabeled, generator = self._batches(iteration)
                    wait = time.perf_counter() - tick
                    losses = self._train_step(step_model, labeled, unlabeled, iteration / total, generator)
                    self._update_teachers(iteration)
                    step_time = time.perf_counter() - tick
                    window.add(losses, wait, step_time)
                    self.timing["train_seconds"] += step_time
                    done = completed = iteration + 1
                    logging = done % self.config.train.log_every == 0 or done == total
                    if self.main and logging:
                        self._log_train(writer, bar, window, done, lr)
                    self._validate_and_save(writer, done)
                    if self._stop_agreed(stop, logging):
                        if self.main and self.saved_at != done:
                            self._save(done)
                        raise RunInterrupted(f"[{method.name}] stopped at iteration {done}/{total}, "
                                             "last.pt saved there.")
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"[{method.name}] stopped at once during iteration {completed + 1}/{total}, "
                + (f"last.pt is from iteration {self.saved_at}." if self.saved_at
                   else "before this stage's first checkpoint.")
            ) from None
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        distributed.barrier()
        return {"best": self.best, "last": self.last_val, **self.timing}

    def _place_on_device(self) -> None:
        """The method on the training device (BatchNorm synchronised across CUDA ranks, banks gathered
        from every rank), in channels_last when asked."""
        method = self.method
        if self.parallel:
            distributed.share_banks(method)
            if self.device.type == "cuda":
                method.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method.model)
        method.to(self.device)
        if self.config.train.channels_last:
            method.to(memory_format=torch.channels_last)

    def _build_optimizer(self) -> None:
        """SGD over the trainable parameters, and the precision: autocast dtype, and a gradient scaler for fp16."""
        config = self.config
        self.optimizer = torch.optim.SGD(
            self.method.trainable_parameters(),
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            weight_decay=config.optim.weight_decay,
            nesterov=self.stage.nesterov,
        )
        self.amp = resolve_amp(config, self.device)
        fp16 = self.amp and config.train.amp_dtype == "fp16"
        if fp16 and self.device.type != "cuda":
            raise MonaError("train.amp_dtype=fp16 needs a CUDA device; use bf16 on the CPU")
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.amp_dtype = torch.float16 if fp16 else torch.bfloat16

    def _restore(self, state: dict | None) -> int:
        """Load `state` (weights, optimiser, scaler, best and last scores, time) and return the
        iteration to start at; a fresh start drops a log left by a start killed before its first checkpoint."""
        self.best, self.last_val, elapsed, start = {"dice": -1.0, "iteration": -1}, {}, 0.0, 0
        if state is not None:
            load_weights(self.method, state["method"], self.run_dir / "last.pt")
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            start, self.best = state["iteration"], state["metrics"]["best"]
            self.last_val, elapsed = state["metrics"]["val"], state["metrics"].get("train_seconds", 0.0)
            if self.main:
                self._truncate_log(start)
                self.say(f"[{self.method.name}] resumed at iteration {start}/{self.stage.iterations}")
        elif self.main:
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self.timing = {"train_seconds": elapsed, "world_size": distributed.world_size()}
        return start

    def _set_learning_rate(self, progress: float) -> float:
        """The poly schedule's rate at `progress` (or the constant base rate), set on every group."""
        optim = self.config.optim
        lr = optim.lr if self.stage.constant_lr else poly_lr(optim.lr, progress, optim.poly_power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _batches(self, iteration: int) -> tuple[dict, dict | None, torch.Generator]:
        """The step's labeled and unlabeled batches on the device, and the step's generator, seeded from
        (seed, iteration, rank), which drew them and draws the step's augmentation next."""
        seed = step_seed(self.config.train.seed, iteration, self.rank)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        data, stage, device = self.data, self.stage, self.device
        labeled = data.labeled.batch(sample_indices(len(data.labeled.names), stage.batch_labeled, generator), device)
        unlabeled = None
        if self.method.uses_unlabeled:
            indices = sample_indices(len(data.unlabeled.names), stage.batch_unlabeled, generator)
            unlabeled = data.unlabeled.batch(indices, device, with_label=False)
        if self.config.train.channels_last:
            for batch in (labeled, unlabeled):
                if batch is not None:
                    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return labeled, unlabeled, generator

    def _train_step(self, step_model: Callable, labeled: dict, unlabeled: dict | None, progress: float,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Forward under autocast, backward (scaled for fp16), gradients averaged over ranks, one SGD step;
        returns the named losses, still on the device."""
        prepared = self.method.prepare(labeled, unlabeled, progress, generator)  # outside a compiled step
        with autocast(self.device, self.amp, self.amp_dtype):
            losses = step_model(labeled, unlabeled, progress, prepared)
        loss, optimizer, scaler = losses["loss"], self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.parallel:
            distributed.average_gradients(optimizer.param_groups[0]["params"])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return losses

    def _update_teachers(self, iteration: int) -> None:
        method = self.method
        for teacher, student in method.ema_pairs():
            ema_update(teacher, student, ema_momentum(method.ema, iteration) if method.ema_warmup else method.ema)

    def _log_train(self, writer, bar, window: LossWindow, done: int, lr: float) -> None:
        """The window's mean losses and timing to metrics.jsonl, TensorBoard and the progress bar: the
        only place a step's losses are read on the host. A non-finite loss stops the run."""
        record, sec_per_iter, data_wait = window.read()
        if not math.isfinite(record["loss"]):
            raise MonaError(f"training diverged before iteration {done}: loss is {record['loss']}")
        record.update(lr=lr, sec_per_iter=sec_per_iter, data_wait=data_wait)
        self._log(writer, {"iteration": done, "split": "train", **record})
        bar.set_postfix(loss=f"{record['loss']:.3f}", it_s=f"{1 / sec_per_iter:.1f}")

    def _validate_and_save(self, writer, done: int) -> None:
        """At validation steps: val Dice, `best.pt` when it improved and `last.pt`; between them, `last.pt`
        every `checkpoint_every` seconds."""
        config, method = self.config, self.method
        validating = done % config.train.val_every == 0 or done == self.stage.iterations
        if validating and self.parallel:
            self.timing["replica_difference"] = distributed.replica_difference(method.model)
        if self.main and validating:
            self.last_val = validate(method, self.val_volumes, config, self.device, self.amp)
            self.last_val["iteration"] = done
            self.timing["sec_per_iter"] = self.timing["train_seconds"] / done
            val_record = {k: v for k, v in self.last_val.items() if k != "iteration"}
            self._log(writer, {"iteration": done, "split": "val", **val_record,
                               "train_seconds": self.timing["train_seconds"]})
            improved = self.last_val["dice"] > self.best["dice"]
            if improved:
                self.best = dict(self.last_val)
            self._save(done, improved)
            self.say(f"[{method.name}] iteration {done}/{self.stage.iterations}: val Dice {self.last_val['dice']:.4f} "
                     f"(best {self.best['dice']:.4f} at {self.best['iteration']})")
        elif self.main and time.perf_counter() - self.last_save >= config.train.checkpoint_every:
            self._save(done)

    def _stop_agreed(self, stop: StopRequest, logging: bool) -> bool:
        """Whether to stop after this step. Ranks agree on a stop at logging steps only: an all-reduce
        every step would make each CUDA step wait for the host."""
        if self.parallel:
            return logging and distributed.any_rank(stop.requested, self.device)
        return stop.requested

    def _save(self, done: int, improved: bool = False) -> None:
        state = self._checkpoint_state(done)
        if improved:  # weights and metadata: what evaluation, prediction and init_from read
            save_checkpoint(self.run_dir / "best.pt", {**state, "method": self.method.weights(), "optimizer": {},
                                                       "scaler": {}})
        save_checkpoint(self.run_dir / "last.pt", state)
        self.saved_at, self.last_save = done, time.perf_counter()


class LossWindow:
    """The losses and timing of the steps since the last logging step. Losses stay on the device
    (summed as tensors) until `read`, so a step never waits for the device to report them."""

    def __init__(self):
        self._empty()

    def _empty(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.seconds = 0, 0.0, 0.0

    def add(self, losses: dict[str, torch.Tensor], wait: float, seconds: float) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.steps += 1
        self.wait += wait
        self.seconds += seconds

    def read(self) -> tuple[dict[str, float], float, float]:
        """The mean losses, seconds per step and the share of the time spent on batches; then empty."""
        sums = torch.stack(list(self.sums.values())).tolist() if self.sums else []  # one read of the device
        result = ({key: value / self.steps for key, value in zip(self.sums, sums)}, self.seconds / self.steps,
                  self.wait / self.seconds)
        self._empty()
        return result
