"""Where a training step's time goes: torch.profiler over a few steps, top operators and kernels.

  python -m benchmarks.profile_step --device cuda --size 256 --method mona_finetune
  python -m benchmarks.profile_step --device cpu --size 128 --batch 4 --representation-stride 4

Autocast (bf16) is on where training would use it (`fast_bf16`: CUDA, CPUs with AMX, AMD CPUs with
AVX512-BF16).
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from benchmarks.train_speed import PAPER_BATCHES, bench
from mona.engine.trainer import fast_bf16, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--method", default="mona_finetune", choices=sorted(PAPER_BATCHES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="labeled = unlabeled batch (default: the paper's)")
    parser.add_argument("--representation-stride", type=int, default=1, help="MONA stage 2 pixel-embedding stride")
    args = parser.parse_args()
    device = resolve_device(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batch = (args.batch, args.batch) if args.batch else PAPER_BATCHES[args.method]
    amp, stride = fast_bf16(device), args.representation_stride
    bench(args.method, args.size, batch, device, amp=amp, steps=1, warmup=2,
          representation_stride=stride)  # lazy CUDA module loading, allocator
    with profile(activities=activities) as prof:
        row = bench(args.method, args.size, batch, device, amp=amp, steps=args.steps, warmup=0,
                    representation_stride=stride)
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
