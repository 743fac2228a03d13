"""Seconds per iteration, images per second and peak memory of each method's training step.

  python benchmarks/train_speed.py --size 128 --batch 4 --device cpu [--amp | --force-bf16] [--json out.json]
  python benchmarks/train_speed.py --size 256 --paper-batches --device cuda --amp [--compile | --compile-step]

Times the engine's full step (forward, losses, backward, SGD, EMA) of every method's stages
(MONA, BCP and ABD: stage 1 and stage 2) on random data, after warm-up steps (stage 2 with
its hard-negative banks full, as in a real run), and prints each method's cost relative to
mean teacher. Peak memory is `max_memory_allocated` on
CUDA and the process's peak RSS growth on the CPU. `--compile` compiles the UNets; `--compile-step`
the whole `training_step` (its draws prepared on the host first, as the engine does), on CUDA with
`mode="reduce-overhead"`: CUDA graphs, which replay a step that is one graph without the host
(supervised and mean teacher; benchmarks/graph_breaks.py says which are).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from datetime import date

import torch

from mona.config import Config
from mona.engine.environment import cpu_name
from mona.engine.schedule import ema_update
from mona.engine.trainer import resolve_amp, resolve_device
from mona.evaluation.inference import autocast
from mona.methods import METHODS, method_stages

PAPER_BATCHES = {"supervised": (12, 12), "mean_teacher": (12, 12), "mona_pretrain": (3, 3), "mona_finetune": (4, 4),
                 "unimatch": (12, 12), "bcp_pretrain": (12, 12), "bcp_selftrain": (12, 12), "abd_pretrain": (12, 12),
                 "abd_selftrain": (12, 12)}


def make_method(name: str, num_classes: int, size: int, representation_stride: int = 1):
    """A one-stage method by name (`supervised`, `mean_teacher`, `unimatch`) or one stage of a two-stage one
    (`mona_pretrain`, `mona_finetune`, `bcp_selftrain`, ...), as a run at `size` pixels builds it, and the
    number of unlabeled images its stage draws per unlabeled image of the batch (UniMatch: 2)."""
    method, stage_name = (name, "") if name in METHODS else name.split("_", 1)
    config = Config(method=method)
    config.data.image_size = size
    config.mona.representation_stride = representation_stride
    stages = {stage.name: stage for stage in method_stages(config)}
    stage = stages[stage_name]
    factor = 1 if method == "mona" else stage.batch_unlabeled // config.data.batch_unlabeled
    return stage.build(num_classes), factor


def fill_memory_banks(method) -> None:
    """Fill MONA's hard-negative banks to their size, as a real run's are after its first dozens
    of steps; on random data they would stay nearly empty and L_contrast would look cheaper."""
    bank = getattr(method, "negative_bank", None)
    if bank is None:
        return
    for class_index, queue in enumerate(bank.queues):
        bank.push(class_index, torch.randn(queue.size, bank.dim, device=queue.bank.device))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(name: str, size: int, batch: tuple[int, int], device: torch.device, amp: bool, steps: int, warmup: int,
          representation_stride: int = 1, compile_networks: bool = False, channels_last: bool = True,
          compile_step: bool = False):
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    method, unlabeled_factor = make_method(name, 4, size, representation_stride)
    method = method.to(device).to(memory_format=memory_format)
    fill_memory_banks(method)
    if compile_networks:
        for network in (method.model, method.teacher):
            if network is not None:
                network.compile()
    method.train()
    step_model = method.training_step
    if compile_step:
        step_model = torch.compile(step_model, mode="reduce-overhead" if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)

    def batch_of(n: int, with_label: bool):
        out = {"image": torch.rand(n, 1, size, size, device=device).contiguous(memory_format=memory_format)}
        if with_label:
            out["label"] = torch.randint(0, 4, (n, size, size), device=device)
        return out

    labeled, unlabeled = batch_of(batch[0], True), batch_of(batch[1] * unlabeled_factor, False)
    rss_before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        with autocast(device, amp):
            progress = step / (warmup + steps)
            losses = step_model(labeled, unlabeled, progress, method.prepare(labeled, unlabeled, progress, generator))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        for teacher, student in method.ema_pairs():
            ema_update(teacher, student, 0.99)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - tick)
    seconds = statistics.median(times)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb() - rss_before
    return {"method": name, "batch": list(batch), "sec_per_iter": seconds,
            "images_per_sec": sum(batch) / seconds, "peak_memory_mb": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="labeled = unlabeled batch for every method")
    parser.add_argument("--paper-batches", action="store_true", help="12+12 (sup, MT), 3+3 (stage 1), 4+4 (stage 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast where training would use it (fast_bf16)")
    parser.add_argument("--force-bf16", action="store_true", help="bf16 autocast even where training would not: "
                        "to time that choice")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", default="supervised,mean_teacher,mona_pretrain,mona_finetune,unimatch,"
                        "bcp_pretrain,bcp_selftrain,abd_pretrain,abd_selftrain")
    parser.add_argument("--representation-stride", type=int, default=1, help="MONA stage 2 pixel-embedding stride")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="time cuDNN's algorithms first (off in the trainer: no gain measured)")
    parser.add_argument("--contiguous", action="store_true", help="NCHW tensors (train.channels_last=false)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student and teacher UNets")
    parser.add_argument("--compile-step", action="store_true",
                        help="torch.compile the whole training step (CUDA graphs on CUDA)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    config = Config()
    config.train.amp = args.amp
    amp = args.force_bf16 or resolve_amp(config, device)
    rows = []
    for name in args.methods.split(","):
        batch = PAPER_BATCHES[name] if args.paper_batches else (args.batch, args.batch)
        rows.append(bench(name, args.size, batch, device, amp, args.steps, args.warmup, args.representation_stride,
                          args.compile, not args.contiguous, args.compile_step))
    reference = next((r["sec_per_iter"] for r in rows if r["method"] == "mean_teacher"), None)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{hardware}, {torch.get_num_threads()} threads, {args.size}x{args.size}, amp={amp}, "
          f"representation stride {args.representation_stride}, cudnn.benchmark={torch.backends.cudnn.benchmark}, "
          f"compile={args.compile}, compile_step={args.compile_step}, "
          f"{'contiguous' if args.contiguous else 'channels_last'}, "
          f"torch {torch.__version__}, {date.today()}")
    print(f"{'method':<15}{'batch':>7}{'s/iter':>9}{'img/s':>8}{'peak MB':>9}{'x MT':>7}")
    for row in rows:
        row["ratio_to_mean_teacher"] = row["sec_per_iter"] / reference if reference else None
        ratio = f"{row['ratio_to_mean_teacher']:.2f}" if reference else "-"
        print(f"{row['method']:<15}{'+'.join(map(str, row['batch'])):>7}{row['sec_per_iter']:>9.4f}"
              f"{row['images_per_sec']:>8.1f}{row['peak_memory_mb']:>9.0f}{ratio:>7}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": hardware, "size": args.size, "amp": amp, "date": str(date.today()),
                       "torch": torch.__version__, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                       "compile": args.compile, "compile_step": args.compile_step, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
