"""Where a training step's time goes: torch.profiler over a few steps, top operators and kernels.

  python benchmarks/profile_step.py --device cuda --size 256 --method mona_finetune
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.train_speed import PAPER_BATCHES, bench
from mona.engine.trainer import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--method", default="mona_finetune", choices=sorted(PAPER_BATCHES))
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = resolve_device(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batch, amp = PAPER_BATCHES[args.method], device.type == "cuda"
    bench(args.method, args.size, batch, device, amp=amp, steps=1, warmup=2)  # lazy CUDA module loading, allocator
    with profile(activities=activities) as prof:
        row = bench(args.method, args.size, batch, device, amp=amp, steps=args.steps, warmup=0)
    print(f"{args.method} {args.size}x{args.size} batch {row['batch']}: {row['sec_per_iter'] * 1000:.1f} ms/iter "
          f"under the profiler, {args.steps} steps profiled after warm-up")
    events = prof.key_averages()
    if device.type == "cuda":
        print("Top kernels and operators by self GPU time:")
        print(events.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70))
    print("Top operators by self CPU time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=70))


if __name__ == "__main__":
    main()
