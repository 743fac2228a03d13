"""One short run on a phantom with config overrides; prints the best val Dice (for ablations).

  python benchmarks/phantom_ablation.py DATA NAME method=mona mona.pretrain=false mona.consistency=false

Uses the `demo` preset (64x64, 4+4), 3 labeled patients and 200 iterations, one thread,
run folder /tmp/phantom_ablation/NAME. Write a phantom first with `mona synth DATA`.
"""

from __future__ import annotations

import sys

import torch

from mona.config import load_config
from mona.engine.run import train


def main() -> None:
    data, name, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.set_num_threads(1)
    config = load_config(["demo"], [f"data.root={data}", f"out=/tmp/phantom_ablation/{name}", "data.labeled=3",
                                    "train.iterations=200", "train.val_every=100", "train.progress=false", *overrides])
    best = train(config)["best"]
    print(f"{name}: best val Dice {best['dice']:.4f} at iteration {best['iteration']}")


if __name__ == "__main__":
    main()
