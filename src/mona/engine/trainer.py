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

    def _checkpoint_state(self, iteration: int, optimizer, scaler, best: dict, last_val: dict, timing: dict) -> dict:
        return {
            "method": self.method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "iteration": iteration,
            "total_iterations": self.stage.iterations,
            "config": self.config.to_dict(),
            "method_name": self.method.name,
            "num_classes": self.method.num_classes,
            "class_names": self.info.class_names,
            "image_size": self.config.data.image_size,
            "preprocessing": self.info.preprocessing,
            "metrics": {"val": last_val, "best": best, **timing},
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

        config, method, stage, device = self.config, self.method, self.stage, self.device
        self.run_dir.mkdir(parents=True, exist_ok=True)
        main, parallel, rank = distributed.is_main(), distributed.active(), distributed.rank()
        if parallel:
            distributed.share_banks(method)
            if device.type == "cuda":
                method.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method.model)
        method.to(device)
        if config.train.channels_last:
            method.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            method.trainable_parameters(),
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            weight_decay=config.optim.weight_decay,
            nesterov=stage.nesterov,
        )
        amp = resolve_amp(config, device)
        fp16 = amp and config.train.amp_dtype == "fp16"
        if fp16 and device.type != "cuda":
            raise MonaError("train.amp_dtype=fp16 needs a CUDA device; use bf16 on the CPU")
        scaler = torch.amp.GradScaler("cuda") if fp16 else None
        amp_dtype = torch.float16 if fp16 else torch.bfloat16
        start, best, last_val, elapsed = 0, {"dice": -1.0, "iteration": -1}, {}, 0.0
        if state is not None:
            load_weights(method, state["method"], self.run_dir / "last.pt")
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state["scaler"]:
                scaler.load_state_dict(state["scaler"])
            start, best = state["iteration"], state["metrics"]["best"]
            last_val, elapsed = state["metrics"]["val"], state["metrics"].get("train_seconds", 0.0)
            if main:
                self._truncate_log(start)
                self.say(f"[{method.name}] resumed at iteration {start}/{stage.iterations}")
        elif main:
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a start interrupted before its first checkpoint
        step_model = torch.compile(method.training_step) if config.train.compile else method.training_step
        writer = SummaryWriter(str(self.run_dir / "tb")) if main else None
        total = stage.iterations
        bar = tqdm(
            range(start, total), initial=start, total=total, disable=not (config.train.progress and main),
            desc=method.name, dynamic_ncols=True, leave=False,
        )
        window: dict[str, torch.Tensor] = {}
        window_steps, window_wait, window_time = 0, 0.0, 0.0
        timing = {"train_seconds": elapsed, "world_size": distributed.world_size()}
        completed, saved_at, last_save = start, start, time.perf_counter()
        stop = StopRequest(self.say if main else lambda message: None)

        def save(done: int, improved: bool = False) -> None:
            nonlocal saved_at, last_save
            state = self._checkpoint_state(done, optimizer, scaler, best, last_val, timing)
            if improved:  # weights and metadata: what evaluation, prediction and init_from read
                save_checkpoint(self.run_dir / "best.pt", {**state, "method": method.weights(), "optimizer": {},
                                                           "scaler": {}})
            save_checkpoint(self.run_dir / "last.pt", state)
            saved_at, last_save = done, time.perf_counter()

        method.train()
        try:
            with stop.installed():
                for iteration in bar:
                    tick = time.perf_counter()
                    progress = iteration / total
                    lr = config.optim.lr if stage.constant_lr else poly_lr(config.optim.lr, progress,
                                                                            config.optim.poly_power)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    generator = torch.Generator().manual_seed(step_seed(config.train.seed, iteration, rank))
                    torch.manual_seed(step_seed(config.train.seed, iteration, rank))
                    labeled = self.data.labeled.batch(
                        sample_indices(len(self.data.labeled.names), stage.batch_labeled, generator), device
                    )
                    unlabeled = None
                    if method.uses_unlabeled:
                        indices = sample_indices(len(self.data.unlabeled.names), stage.batch_unlabeled, generator)
                        unlabeled = self.data.unlabeled.batch(indices, device, with_label=False)
                    if config.train.channels_last:
                        labeled["image"] = labeled["image"].contiguous(memory_format=torch.channels_last)
                        if unlabeled is not None:
                            unlabeled["image"] = unlabeled["image"].contiguous(memory_format=torch.channels_last)
                    wait = time.perf_counter() - tick
                    with autocast(device, amp, amp_dtype):
                        losses = step_model(labeled, unlabeled, progress, generator)
                    loss = losses["loss"]
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        if parallel:
                            distributed.average_gradients(optimizer.param_groups[0]["params"])
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        if parallel:
                            distributed.average_gradients(optimizer.param_groups[0]["params"])
                        optimizer.step()
                    for teacher, student in method.ema_pairs():
                        ema_update(teacher, student,
                                   ema_momentum(method.ema, iteration) if method.ema_warmup else method.ema)
                    for key, value in losses.items():
                        window[key] = window.get(key, 0.0) + value.detach().float()
                    window_steps += 1
                    window_wait += wait
                    step_time = time.perf_counter() - tick
                    window_time += step_time
                    timing["train_seconds"] += step_time
                    done = completed = iteration + 1
                    if main and (done % config.train.log_every == 0 or done == total):
                        record = {key: float(value) / window_steps for key, value in window.items()}
                        if not math.isfinite(record["loss"]):
                            raise MonaError(f"training diverged before iteration {done}: loss is {record['loss']}")
                        record.update(lr=lr, sec_per_iter=window_time / window_steps,
                                      data_wait=window_wait / window_time)
                        self._log(writer, {"iteration": done, "split": "train", **record})
                        bar.set_postfix(loss=f"{record['loss']:.3f}", it_s=f"{window_steps / window_time:.1f}")
                        window, window_steps, window_wait, window_time = {}, 0, 0.0, 0.0
                    validating = done % config.train.val_every == 0 or done == total
                    if validating and parallel:
                        timing["replica_difference"] = distributed.replica_difference(method.model)
                    if main and validating:
                        last_val = validate(method, self.val_volumes, config, device, amp)
                        last_val["iteration"] = done
                        timing["sec_per_iter"] = timing["train_seconds"] / done
                        val_record = {k: v for k, v in last_val.items() if k != "iteration"}
                        self._log(writer, {"iteration": done, "split": "val", **val_record,
                                           "train_seconds": timing["train_seconds"]})
                        improved = last_val["dice"] > best["dice"]
                        if improved:
                            best = dict(last_val)
                        save(done, improved)
                        self.say(f"[{method.name}] iteration {done}/{total}: val Dice {last_val['dice']:.4f} "
                                 f"(best {best['dice']:.4f} at {best['iteration']})")
                    elif main and time.perf_counter() - last_save >= config.train.checkpoint_every:
                        save(done)
                    # ranks agree on a stop at logging steps only: an all-reduce every step would make
                    # each CUDA step wait for the host
                    if parallel:
                        stopping = (done % config.train.log_every == 0 or done == total) and \
                            distributed.any_rank(stop.requested, device)
                    else:
                        stopping = stop.requested
                    if stopping:
                        if main and saved_at != done:
                            save(done)
                        raise RunInterrupted(f"[{method.name}] stopped at iteration {done}/{total}, "
                                             "last.pt saved there.")
        except KeyboardInterrupt:
            raise RunInterrupted(
                f"[{method.name}] stopped at once during iteration {completed + 1}/{total}, "
                + (f"last.pt is from iteration {saved_at}." if saved_at else "before this stage's first checkpoint.")
            ) from None
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        distributed.barrier()
        return {"best": best, "last": last_val, **timing}
