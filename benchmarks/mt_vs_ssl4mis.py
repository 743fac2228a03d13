"""Mean-teacher step time of mona against SSL4MIS's, end to end, on this machine, in one run.

  python benchmarks/mt_vs_ssl4mis.py ../shared/data/ACDC [--iterations 60] [--peer ../shared/peers/ssl4mis]

Both train their mean teacher at the `cpu-small` shape (128x128, 4 labeled + 4 unlabeled,
7 patients, 2 threads) with their own data pipelines; the peer through its `mt_speed.sh`
(which times its log lines after 10 warm-up iterations), mona through `mona train` (the loop's
own per-window timing in metrics.jsonl, after the first window of 20 iterations; no validation
inside the timed part). Prints the CPU, the precision mona trained in, both s/it and mona / peer,
and the floor both share: the network passes of a mean-teacher step alone (the student's forward
and backward on 8 slices, the teacher's forward on 4; channels_last fp32, no dropout, losses,
optimiser or EMA), which no step built on this network and convolution library can beat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mona.engine.environment import cpu_flags, cpu_name
from mona.models.unet import UNet

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "ssl4mis"


def peer_seconds(peer: Path, data: Path, iterations: int) -> float:
    result = subprocess.run(["bash", str(peer / "mt_speed.sh"), str(data), str(iterations)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"peer failed: {result.stderr.strip()[-500:]}")
    return float(result.stdout.split()[-1])


def mona_seconds(data: Path, iterations: int, extra: list[str]) -> tuple[float, str]:
    """s/it of `mona train --method mean_teacher --config cpu-small`, and the precision it ran in."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "mona", "train", "--data", str(data), "--method", "mean_teacher",
                   "--labeled", "7", "--config", "cpu-small", "--iterations", str(iterations), "--out", str(run),
                   "--no-progress", f"train.val_every={iterations}", "train.log_every=20", *extra]
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        windows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        windows = [w for w in windows if w["split"] == "train"][1:]  # the first window warms up
        precision = json.loads((run / "environment.json").read_text())[-1]["precision"]
        return sum(w["sec_per_iter"] for w in windows) / len(windows), precision


def network_floor_seconds(steps: int = 20, warmup: int = 3) -> float:
    """Median s/it of a mean-teacher step's UNet passes alone, 2 threads, in this process."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    student, teacher = (UNet().to(memory_format=torch.channels_last) for _ in range(2))
    for module in [*student.modules(), *teacher.modules()]:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    slices = torch.randn(8, 1, 128, 128).to(memory_format=torch.channels_last)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        student(slices).logits.mean().backward()
        with torch.no_grad():
            teacher(slices[4:])
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="ACDC in the SSL4MIS layout")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--peer", type=Path, default=PEER, help=f"the SSL4MIS peer folder (default {PEER})")
    parser.add_argument("overrides", nargs="*", help="mona config overrides, e.g. train.channels_last=false")
    args = parser.parse_args()
    if args.iterations < 40:
        sys.exit("--iterations must be at least 40 (20 warm up)")
    mona, precision = mona_seconds(args.data.resolve(), args.iterations, args.overrides)
    peer = peer_seconds(args.peer, args.data.resolve(), args.iterations)
    floor = network_floor_seconds()
    print(f"{cpu_name()} ({', '.join(cpu_flags())}), mona in {precision}, 2 threads, 128x128, 4+4, "
          f"{args.iterations} iterations {' '.join(args.overrides)}")
    print(f"SSL4MIS mean teacher {peer:.3f} s/it, mona {mona:.3f} s/it, mona / SSL4MIS = {mona / peer:.2f}")
    print(f"the network passes alone {floor:.3f} s/it = {floor / peer:.2f} of SSL4MIS's step")


if __name__ == "__main__":
    main()
