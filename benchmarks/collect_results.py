"""Score every run of a folder on the test split and gather the figures into one JSON file.

  python benchmarks/collect_results.py RUNS_DIR results.json [WALL_SECONDS]

Each run is scored on its best-on-val checkpoint (and its last); a run that did not reach
its final iteration is marked partial. Val curves and seconds per iteration come from
each stage's metrics.jsonl.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mona.engine.checkpoint import load_checkpoint
from mona.engine.run import evaluate_run
from mona.errors import MonaError


def stage_dirs(run: Path) -> list[Path]:
    return [d for d in (run / "pretrain", run / "finetune") if d.is_dir()] or [run]


def collect(run: Path) -> dict:
    entry: dict = {"run": run.name, "stages": {}}
    for stage in stage_dirs(run):
        if not (stage / "last.pt").is_file():
            continue
        state = load_checkpoint(stage / "last.pt")
        log = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
        entry["stages"][stage.name] = {
            "iteration": state["iteration"], "total": state["total_iterations"],
            "sec_per_iter": state["metrics"].get("sec_per_iter"),
            "train_seconds": state["metrics"].get("train_seconds"),
            "best_val": state["metrics"]["best"], "log": log,
        }
    final = list(entry["stages"].values())[-1] if entry["stages"] else None
    unfinished_stage2 = (run / "pretrain").is_dir() and not (run / "finetune" / "last.pt").is_file()
    entry["partial"] = final is None or final["iteration"] < final["total"] or unfinished_stage2
    for checkpoint in ("best", "last"):
        try:
            entry[f"test_{checkpoint}"] = evaluate_run(run, "test", checkpoint)
        except MonaError as error:
            entry[f"test_{checkpoint}"] = {"error": str(error)}
    return entry


def main() -> None:
    runs = sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir() and (p / "config.yaml").is_file())
    with ProcessPoolExecutor(max_workers=8, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = {"runs": list(pool.map(collect, runs))}
    if len(sys.argv) > 3:
        results["wall_seconds"] = float(sys.argv[3])
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))
    for entry in results["runs"]:
        best = entry["test_best"]
        dice = f"{best['mean']['dice']:.4f}" if "mean" in best else best.get("error")
        print(f"{entry['run']:<10} partial={entry['partial']} test Dice (best on val) {dice}")


if __name__ == "__main__":
    main()
