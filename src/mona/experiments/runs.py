"""The finished runs of a report folder, read from their run folders: config, variant (method or
MONA ablation), test summaries per checkpoint, training time and machine, Dice per volume.

Only finished runs (RUN/eval_test_best/summary.json) are read, so a report can be rebuilt at any
time, also while a grid is still running. No checkpoint is needed: training times come from the
runs' metrics.jsonl.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from mona.data.ssl4mis import ACDC_CLASSES
from mona.engine.checkpoint import load_checkpoint
from mona.engine.environment import one_line
from mona.engine.run_folder import is_run_folder, stage_folders
from mona.errors import MonaError
from mona.experiments.grid import ABLATIONS, is_finished
from mona.experiments.html import read_records
from mona.methods import METHODS

# RUN/eval_test_<key>/ -> its label in the tables; a run's post-processed scores are shown where it has them
CHECKPOINTS = {"best": "best on val", "last": "last", "best_postprocessed": "best on val, post-processed on val"}


def variant_of(config: dict) -> str:
    """The method, or `mona_no_<component>` for a MONA run with ablation switches off."""
    if config["method"] != "mona":
        return config["method"]
    off = [part for part in ABLATIONS if not config["mona"][part]]
    return "mona_no_" + "_".join(off) if off else "mona"


def budget_key(labeled: str) -> float:
    return math.inf if labeled == "all" else float(labeled)


def variant_key(variant: str) -> tuple[int, str]:
    order = list(METHODS)
    return (order.index(variant) if variant in order else len(order), variant)


def stage_timing(stage: Path) -> tuple[float, int]:
    """Training seconds and iterations of one stage: from its last val record, or from `last.pt` for
    runs logged before val records carried `train_seconds`."""
    val = [r for r in read_records(stage) if r["split"] == "val"]
    if val and "train_seconds" in val[-1]:
        return val[-1]["train_seconds"], val[-1]["iteration"]
    if not (stage / "last.pt").is_file():
        raise MonaError("no training time: the last val record has no train_seconds and last.pt is missing",
                        stage / "metrics.jsonl")
    state = load_checkpoint(stage / "last.pt")
    return state["metrics"].get("train_seconds", 0.0), state["iteration"]


def load_run(run_dir: Path) -> dict:
    """A finished run: its config, variant, test summaries per checkpoint and training time."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    timings = [stage_timing(stage) for stage in stage_folders(run_dir)]
    seconds, iterations = sum(s for s, _ in timings), sum(i for _, i in timings)
    return {
        "name": run_dir.name, "dir": run_dir, "config": config, "variant": variant_of(config),
        "labeled": str(config["data"]["labeled"]), "seed": config["train"]["seed"],
        "summaries": {c: json.loads((run_dir / f"eval_test_{c}" / "summary.json").read_text()) for c in CHECKPOINTS
                      if (run_dir / f"eval_test_{c}" / "summary.json").is_file()},
        "train_seconds": seconds, "sec_per_iter": seconds / iterations if iterations else float("nan"),
        "hardware": run_hardware(run_dir),
    }


def run_hardware(run_dir: Path) -> str:
    """The machine and precision a run trained on: its `hardware.txt` (grid runs), else the last start
    recorded in its `environment.json`; "" for a run from before either."""
    if (run_dir / "hardware.txt").is_file():
        return (run_dir / "hardware.txt").read_text().strip()
    try:
        return one_line(json.loads((run_dir / "environment.json").read_text())[-1])
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        return ""


def run_folders(out: Path) -> list[Path]:
    """The run folders a report of OUT covers: OUT/runs/* (a `mona reproduce` folder), OUT itself when
    it is a run, else the runs directly in OUT (a folder of runs)."""
    if (out / "runs").is_dir():
        return [d for d in sorted((out / "runs").iterdir()) if d.is_dir()]
    if is_run_folder(out):
        return [out]
    return [d for d in sorted(out.iterdir()) if is_run_folder(d)] if out.is_dir() else []


def collect(out: Path) -> list[dict]:
    folders = run_folders(out)
    if not folders:
        raise MonaError("no run folders here: give a run folder, a folder of runs, or a mona reproduce --out "
                        "folder", out)
    runs = [load_run(d) for d in folders if is_finished(d)]
    if not runs:
        raise MonaError(f"no finished runs: none of the {len(folders)} run folder(s) here is scored on its test "
                        f"split yet; score each with mona evaluate RUN --split test (e.g. {folders[0]})", out)
    return sorted(runs, key=lambda r: (variant_key(r["variant"]), budget_key(r["labeled"]), r["seed"]))


def acdc_like(root: str, class_names: list[str]) -> bool:
    """ACDC: a mona.json named ACDC*, or no mona.json with ACDC's classes (the reader's default);
    when the data folder is gone, judged by its name."""
    root_path = Path(root)
    meta = root_path / "mona.json"
    if meta.is_file():
        return str(json.loads(meta.read_text()).get("name", "")).lower().startswith("acdc")
    if not root_path.is_dir():
        return "acdc" in root_path.name.lower()
    return class_names == ACDC_CLASSES[1:]  # the summaries name foreground classes only


def volume_dice(run: dict, evaluation: str = "eval_test_best") -> dict[str, float]:
    """Dice per volume, averaged over classes, of one evaluation (RUN/eval_test_best/cases.csv by default)."""
    per_class: dict[str, list[float]] = defaultdict(list)
    with open(run["dir"] / evaluation / "cases.csv", newline="") as f:
        for row in csv.DictReader(f):
            per_class[row["case"]].append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in per_class.items()}
