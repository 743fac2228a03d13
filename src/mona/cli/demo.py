"""Train supervised, mean teacher and MONA on the built-in phantom with one labeled patient, score
them on its test volumes, print one table and write `report.html` (about 3.5 minutes on 2 CPU cores).

  mona demo [--out mona-demo] [--seed 0] [--iterations N] [--labeled 1] [--patients 14]
            [--val-patients 6] [--test-patients 14]

Everything is written under --out: the phantom (data/), one run folder per method, each run's
evaluation and report.html; a second demo into the same --out replaces its runs (and rewrites
the phantom when its settings changed). Nothing is downloaded. The phantom is the harder one
(`variation=1`: heart size, position and contrast differ between patients), so one labeled
patient does not cover the test patients and the unlabeled ones do. Patients differ so much that
a mean Dice over a few of them is mostly the luck of which ones they are, so the test set is as
large as the training set (14 patients) and val has 6: the ranking and the checkpoint chosen on
val do not hang on two or four patients. Under the table, MONA is compared with each other method
test volume by test volume (how many it leads on, Wilcoxon p).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mona.config import Config, load_config
from mona.data.phantom import write_phantom
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.environment import cpu_name
from mona.engine.run import evaluate_run, train
from mona.engine.run_folder import read_stages
from mona.engine.trainer import precision, resolve_device
from mona.errors import MonaError
from mona.experiments.html import Table, learning_curves, slice_browser, write_page
from mona.experiments.statistics import paired_comparison

METHODS = "supervised,mean_teacher,mona"
# Each method's learning rate, chosen on the phantom's val Dice among 0.01 (the spec's) and 0.03:
# the 300 iterations they were chosen at are too few for MONA at 0.01 (docs/results/demo-2026-11-30b).
LEARNING_RATES = {"supervised": 0.01, "mean_teacher": 0.03, "mona": 0.03}
PHANTOM_VARIATION = 1.0
TRAIN_PATIENTS, VAL_PATIENTS, TEST_PATIENTS = 14, 6, 14  # the demo phantom's split (module docstring)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("mona-demo"), help="output folder (default mona-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom and of every run (default 0)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations per method, MONA's stages included (preset: see mona/presets/demo.yaml)")
    parser.add_argument("--labeled", default="1", help="labeled phantom patients (default 1)")
    parser.add_argument("--patients", type=int, default=TRAIN_PATIENTS,
                        help=f"training patients: the --labeled ones and the unlabeled rest (default {TRAIN_PATIENTS})")
    parser.add_argument("--val-patients", type=int, default=VAL_PATIENTS, help=f"val patients (default {VAL_PATIENTS})")
    parser.add_argument("--test-patients", type=int, default=TEST_PATIENTS,
                        help=f"test patients (default {TEST_PATIENTS})")
    parser.add_argument("--methods", default=METHODS, help=f"comma-separated methods (default {METHODS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def phantom_settings(seed: int, train: int = TRAIN_PATIENTS, val: int = VAL_PATIENTS,
                     test: int = TEST_PATIENTS) -> dict:
    """`write_phantom`'s arguments for the demo's phantom (as `mona.json` records them)."""
    return {"patients": train + val + test, "seed": seed, "variation": PHANTOM_VARIATION, "held_out": [val, test]}


def ensure_phantom(data: Path, wanted: dict) -> None:
    """Write the phantom to `data`, or keep the one there when it was written with the same settings;
    a phantom written with others is replaced, any other folder is left alone."""
    meta = data / "mona.json"
    if meta.is_file():
        recorded = json.loads(meta.read_text()).get("phantom", {})
        if {key: recorded.get(key) for key in wanted} == wanted:
            return
        if not recorded:
            raise MonaError("this folder holds a dataset that is not the demo's phantom; choose another --out", data)
        shutil.rmtree(data)
    elif data.exists() and any(data.iterdir()):
        raise MonaError("this folder holds files that are not the demo's phantom; choose another --out", data)
    write_phantom(data, **wanted)
    print(f"phantom written to {data}")


def method_config(method: str, data: Path, out: Path, seed: int, labeled: str = "1", iterations: int | None = None,
                  progress: bool = True, extra: list[str] = ()) -> Config:
    """The config `mona demo` trains `method` with: the demo preset, the method's learning rate, then
    `extra` overrides. MONA trains as many iterations as the others (`iterations`, else the preset's):
    its stage 1 keeps its share of them (`mona.pretrain_iterations` of the preset's `train.iterations`), stage 2
    the rest."""
    overrides = [f"method={method}", f"data.root={data}", f"data.labeled={labeled}", f"out={out}",
                 f"train.seed={seed}", f"train.progress={progress}"]
    if method in LEARNING_RATES:
        overrides.append(f"optim.lr={LEARNING_RATES[method]}")
    config = load_config(["demo"], overrides + list(extra))
    total = iterations or config.train.iterations
    if method == "mona":
        if total < 2:
            raise MonaError(f"MONA trains two stages: give --iterations 2 or more, not {total}")
        share = config.mona.pretrain_iterations / load_config(["demo"]).train.iterations
        config.mona.pretrain_iterations = min(max(1, round(total * share)), total - 1)
        total -= config.mona.pretrain_iterations
    config.train.iterations = total
    return config


def method_iterations(run_dir: Path) -> str:
    """`300`, or `100+200` for a run of two stages (from RUN/stages.json)."""
    return "+".join(str(stage["iterations"]) for stage in read_stages(run_dir))


def format_comparison(results: dict[str, dict], seconds: dict[str, float]) -> str:
    """One row per method: Dice (%) and HD95, each as the mean over classes then per class, and
    the seconds the method took (training and scoring)."""
    first = next(iter(results.values()))
    names = [c["name"][:6] for c in first["classes"]]
    width = 8 + 7 * len(names)
    lines = [f"{'':<14}{'Dice %':<{width}}{'HD95 ' + first['unit']:<{width}}",
             f"{'method':<14}" + 2 * (f"{'mean':>8}" + "".join(f"{n:>7}" for n in names)) + f"{'seconds':>9}"]
    for method, summary in results.items():
        dice = f"{100 * summary['mean']['dice']:>8.1f}" + "".join(f"{100 * c['dice']['mean']:>7.1f}"
                                                               for c in summary["classes"])
        hd95 = f"{summary['mean']['hd95']:>8.1f}" + "".join(f"{c['hd95']['mean']:>7.1f}" for c in summary["classes"])
        lines.append(f"{method:<14}{dice}{hd95}{seconds[method]:>9.0f}")
    return "\n".join(lines)


def paired_lines(runs: dict[str, Path], method: str = "mona") -> list[str]:
    """`method` against each other method, test volume by test volume: is its lead more than noise?"""
    if method not in runs:
        return []
    entries = [{"dir": run_dir, "seed": 0, "variant": name, "labeled": ""} for name, run_dir in runs.items()]
    lines = []
    for reference in runs:
        if reference == method:
            continue
        result = paired_comparison(entries, method, reference, "")
        p_value = "-" if result["p_value"] is None else f"{result['p_value']:.1g}"
        lines.append(f"{method} against {reference}: {100 * result['gain']:+.1f} Dice points per test volume, "
                     f"ahead on {result['ahead']} of {result['volumes']} (Wilcoxon p {p_value})")
    return lines


def comparison_table(results: dict[str, dict], seconds: dict[str, float], iterations: dict[str, str]) -> Table:
    """The printed table as an HTML table, with each method's iterations."""
    first = next(iter(results.values()))
    names = [c["name"] for c in first["classes"]]
    unit = first["unit"]
    header = ["method", "Dice %", *(f"Dice {n} %" for n in names), f"HD95 {unit}",
              *(f"HD95 {n} {unit}" for n in names), "iterations", "seconds"]
    rows = [[method, f"{100 * s['mean']['dice']:.1f}", *(f"{100 * c['dice']['mean']:.1f}" for c in s["classes"]),
             f"{s['mean']['hd95']:.1f}", *(f"{c['hd95']['mean']:.1f}" for c in s["classes"]), iterations[method],
             f"{seconds[method]:.0f}"] for method, s in results.items()]
    return Table(f"Test volumes: {first['cases']}, mean over volumes (best checkpoint on val)", header, rows)


def write_report(out: Path, data: Path, runs: dict[str, Path], predictions: dict[str, list[np.ndarray]],
                 table: Table, notes: list[str]) -> Path:
    """report.html: the table, the learning curves and a slice browser per test volume, showing
    `predictions` (each method's scored label maps, in the test split's order)."""
    info = dataset_info(data)
    volumes = load_volumes(info, "test")
    browsers = [slice_browser(volume, {m: labels[i] for m, labels in predictions.items()}, info.class_names)
                for i, volume in enumerate(volumes)]
    return write_page(out / "report.html", "mona demo: one labeled phantom patient", notes, [table],
                      [("learning curves", learning_curves(runs))], browsers)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    data = args.out / "data"
    ensure_phantom(data, phantom_settings(args.seed, args.patients, args.val_patients, args.test_patients))
    results, seconds, runs, predictions = {}, {}, {}, {}
    for method in args.methods.split(","):
        config = method_config(method, data, args.out / method, args.seed, args.labeled, args.iterations,
                               not args.no_progress)
        tick = time.perf_counter()
        train(config, overwrite=True)
        results[method], predictions[method] = evaluate_run(config.out, "test", return_labels=True)
        seconds[method] = time.perf_counter() - tick
        runs[method] = Path(config.out)
    device = resolve_device(config.train.device)
    first = next(iter(results.values()))
    heading = (f"test volumes: {first['cases']} ({args.test_patients} phantom patients; {args.labeled} of "
               f"{args.patients} training patients labeled, {args.val_patients} val), "
               f"seed {args.seed}, {device.type} {precision(config, device)}, best checkpoint on val")
    print(heading)
    print(format_comparison(results, seconds))
    paired = paired_lines(runs)
    for line in paired:
        print(line)
    iterations = {method: method_iterations(run_dir) for method, run_dir in runs.items()}
    notes = [heading, *paired, f"CPU: {cpu_name()}, {torch.get_num_threads()} threads",
             "iterations: " + ", ".join(f"{m} {i}" for m, i in iterations.items()) + " (MONA: stage 1 + stage 2)",
             f"training and scoring: {sum(seconds.values()):.0f} s; data and runs in {args.out.absolute()}"]
    report = write_report(args.out, data, runs, predictions, comparison_table(results, seconds, iterations), notes)
    print(f"total {time.perf_counter() - start:.0f} s; report: {report}")
    return 0
