"""Train `supervised` and `mean_teacher` on the built-in phantom at a small label budget,
score both on the phantom's test volumes and print one table (a few minutes on 2 CPU cores).

  mona demo [--out mona-demo] [--iterations 300] [--labeled 1]

Everything is written under --out: the phantom (data/), one run folder per method, and
each run's evaluation; a second demo into the same --out replaces its runs. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine.run import evaluate_run, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("mona-demo"), help="output folder (default mona-demo)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per method (preset: 300)")
    parser.add_argument("--labeled", default="1", help="labeled phantom patients (default 1)")
    parser.add_argument("--patients", type=int, default=20, help="phantom patients (default 20)")
    parser.add_argument("--methods", default="supervised,mean_teacher", help="comma-separated methods")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def format_comparison(results: dict[str, dict]) -> str:
    """One row per method: mean Dice/Jaccard (%) and HD95/ASD, then Dice of each class."""
    first = next(iter(results.values()))
    names = [c["name"] for c in first["classes"]]
    unit = first["unit"]
    header = f"{'method':<14}{'Dice %':>8}{'Jacc %':>8}{'HD95':>8}{'ASD':>8}" + "".join(f"{n[:8]:>9}" for n in names)
    lines = [f"test volumes: {first['cases']}, distances in {unit}, per-class columns are Dice %", header]
    for method, summary in results.items():
        mean = summary["mean"]
        row = (f"{method:<14}{100 * mean['dice']:>8.1f}{100 * mean['jaccard']:>8.1f}"
               f"{mean['hd95']:>8.2f}{mean['asd']:>8.2f}")
        lines.append(row + "".join(f"{100 * c['dice']['mean']:>9.1f}" for c in summary["classes"]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    data = args.out / "data"
    if not (data / "train_slices.list").is_file():
        write_phantom(data, patients=args.patients)
        print(f"phantom written to {data}")
    results = {}
    for method in args.methods.split(","):
        overrides = [f"method={method}", f"data.root={data}", f"data.labeled={args.labeled}",
                     f"out={args.out / method}", f"train.progress={not args.no_progress}"]
        if args.iterations:
            overrides.append(f"train.iterations={args.iterations}")
        config = load_config(["demo"], overrides)
        train(config, overwrite=True)
        results[method] = evaluate_run(config.out, "test")
    print(format_comparison(results))
    return 0
