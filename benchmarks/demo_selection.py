"""Best val Dice of each `mona demo` method on the demo's phantom, with config overrides: how the demo's
settings are chosen (val only; the test volumes are never scored here).

  python benchmarks/demo_selection.py --seed 0 [--methods mona] [--patients 14] [--val-patients 6] [OVERRIDE ...]
  python benchmarks/demo_selection.py --seed 1 --methods mona mona.rampup=0.2

Trains as `mona demo --seed S` does (same phantom, preset and learning rates, then OVERRIDEs, e.g.
`optim.lr=0.03` or `mona.pretrain_iterations=200`, out of the preset's 300), into --out/S/METHOD, and
prints one line per method: best val Dice, its iteration, and the training seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mona.cli.demo import METHODS, TRAIN_PATIENTS, VAL_PATIENTS, ensure_phantom, method_config, phantom_settings
from mona.engine.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom and of every run")
    parser.add_argument("--patients", type=int, default=TRAIN_PATIENTS, help="training patients (as mona demo's)")
    parser.add_argument("--val-patients", type=int, default=VAL_PATIENTS, help="val patients (as mona demo's)")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo_selection"))
    parser.add_argument("overrides", nargs="*", help="config overrides for every method")
    args = parser.parse_args()
    data = args.out / f"data_{args.seed}_{args.patients}_{args.val_patients}"
    ensure_phantom(data, phantom_settings(args.seed, args.patients, args.val_patients))
    for method in args.methods.split(","):
        config = method_config(method, data, args.out / str(args.seed) / method, args.seed, progress=False,
                               extra=args.overrides)
        tick = time.perf_counter()
        best = train(config, overwrite=True)["best"]
        print(f"{method} seed {args.seed} {' '.join(args.overrides)}: best val Dice {best['dice']:.4f} at "
              f"iteration {best['iteration']} ({time.perf_counter() - tick:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
