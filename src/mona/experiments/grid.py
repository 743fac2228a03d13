"""Plan and run a grid of runs (method x label budget x seed, plus ablations), resumably.

Every run lives in OUT/runs/<name>. A run counts as finished once
RUN/eval_test_best/summary.json exists; that file is written last (after the `last`
checkpoint's evaluation), so a grid stopped at any point picks up where it left off:
finished runs are skipped (a finished run without post-processed scores gets them), an
interrupted run resumes from its `last.pt`, a run that never wrote a checkpoint starts afresh.
Checkpoints are chosen on the val split by the engine (`best.pt`); the test split is only scored.
"""

from __future__ import annotations

import fcntl
import json
import shlex
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from mona.config import load_config
from mona.data.io import atomic_path
from mona.engine.environment import one_line
from mona.engine.run import evaluate_run, resume_config, run_checkpoint, train
from mona.engine.run_folder import RunLock, stage_folders
from mona.errors import MonaError, RunInUse

ABLATIONS = ("pretrain", "tailness", "consistency", "diversity", "strong_aug")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: `variant` is the method, or `mona_no_<component>` for an ablation."""

    name: str
    method: str
    variant: str
    labeled: str
    seed: int
    overrides: tuple[str, ...] = ()


def _spec(variant: str, method: str, labeled: str, seed: int, overrides: tuple[str, ...] = ()) -> RunSpec:
    return RunSpec(f"{variant}_l{labeled}_s{seed}", method, variant, str(labeled), seed, overrides)


def plan(methods: Sequence[str], budgets: Sequence[str | int], seeds: Sequence[int],
         ablate: str | int | None = None, upper_bound: bool = True) -> list[RunSpec]:
    """The runs of a grid: every method x budget x seed, the fully supervised upper bound
    (`supervised_lall_s<seed>`) for each seed unless `upper_bound` is off, and with `ablate` N
    one MONA run per seed at budget N with each component of `ABLATIONS` switched off."""
    specs = [_spec(m, m, str(b), s) for m in methods for b in budgets for s in seeds]
    specs += [_spec("supervised", "supervised", "all", s) for s in seeds] if upper_bound else []
    if ablate is not None:
        specs += [_spec(f"mona_no_{part}", "mona", str(ablate), s, (f"mona.{part}=false",))
                  for part in ABLATIONS for s in seeds]
    return list({spec.name: spec for spec in specs}.values())  # a budget "all" in `budgets` is not run twice


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "eval_test_best" / "summary.json").is_file()


def score_postprocessed(run_dir: Path) -> None:
    """Test scores of the best checkpoint post-processed as chosen on val (eval_test_best_postprocessed/);
    a run trained before training made that choice makes it first (`mona evaluate RUN --split val`)."""
    if not (run_dir / "postprocessing.json").is_file():
        evaluate_run(run_dir, "val", "best")
    evaluate_run(run_dir, "test", "best", postprocess="val")


def has_checkpoint(run_dir: Path) -> bool:
    """A `last.pt` to resume from, in any of the run's stage folders."""
    return run_dir.is_dir() and any((folder / "last.pt").is_file() for folder in stage_folders(run_dir))


def record_grid(path: Path, data: str | Path, protocol: str, overrides: Sequence[str],
                specs: Sequence[RunSpec]) -> None:
    """Write OUT/grid.json: data, protocol, overrides and every run planned into OUT so far.

    A later call into the same OUT adds its runs to the list; one with another data folder,
    protocol or overrides is refused, since its finished runs would be skipped as if they
    matched and the report would state one protocol for both.
    """
    grid = {"data": str(data), "protocol": protocol, "overrides": list(overrides), "runs": []}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
            same = {"data": Path(earlier["data"]).resolve() == Path(data).resolve(),
                    "protocol": earlier["protocol"] == protocol, "overrides": earlier["overrides"] == list(overrides)}
            runs = earlier["runs"]
        except (ValueError, KeyError, TypeError) as error:
            raise MonaError(f"unreadable grid record ({error}); move it away to start a new grid here", path) from None
        for key, matches in same.items():
            if not matches:
                raise MonaError(f"this folder holds a grid with {key} {earlier[key]!r}, not {grid[key]!r}: "
                                "choose another --out", path)
        grid.update(data=earlier["data"], runs=runs)
    known = {run["name"] for run in grid["runs"]}
    grid["runs"] += [asdict(spec) for spec in specs if spec.name not in known]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(grid, indent=2) + "\n")


def grid_finished(out: str | Path, specs: Sequence[RunSpec]) -> bool:
    return all(is_finished(Path(out) / "runs" / spec.name) for spec in specs)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if need be): one process at a time, even on a
    cluster's shared file system (flock), e.g. to build the report of a grid whose cells end together."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def slurm_script(command: Sequence[str], cells: int, out: Path, gpus: int = 1, time: str = "24:00:00",
                 partition: str | None = None) -> str:
    """A SLURM job-array script: array task i runs `command` (a `mona reproduce` without `--cell`)
    with `--cell i`, so each of the `cells` runs is one task; locks, scoring and the report behave
    as with processes started by hand. Logs go to OUT/slurm/."""
    options = [f"--job-name=mona-{out.name}", f"--array=0-{cells - 1}", f"--time={time}",
               f"--output={out.absolute() / 'slurm' / '%x_%A_%a.log'}"]
    options += [f"--gpus={gpus}"] if gpus else []
    options += [f"--partition={partition}"] if partition else []
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {shlex.quote(option)}" for option in options),
        "# one grid cell per array task; run a task by hand with SLURM_ARRAY_TASK_ID=i bash THIS_FILE",
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        f'exec {shlex.join(command)} --cell "$SLURM_ARRAY_TASK_ID"',
        "",
    ])


def run_grid(data: str | Path, specs: Sequence[RunSpec], protocol: str, out: str | Path,
             extra_overrides: Sequence[str] = (), cell: int | None = None) -> list[Path]:
    """Train and test-score every spec into OUT/runs/<name>, skipping finished runs; returns the run folders.

    Config = `protocol` preset, then the spec (method, data, budget, seed), then `extra_overrides`,
    then the spec's ablation switch and the run folder (these two cannot be overridden).
    OUT/grid.json records the protocol and the runs for the report (see `record_grid`).
    A run that another live process is training (its `.lock`) is skipped, so several processes
    on one grid, e.g. one thread each on a multi-core CPU, share out its runs as lanes. With `cell`
    only `specs[cell]` is run (one task of a job array), though the grid records them all.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_grid(out / "grid.json", data, protocol, extra_overrides, specs)
    folders = []
    again = "the same `mona reproduce` command (it skips the finished runs)"
    for spec in specs if cell is None else [specs[cell]]:
        run_dir = out / "runs" / spec.name
        folders.append(run_dir)
        if is_finished(run_dir):
            if not (run_dir / "eval_test_best_postprocessed").is_dir() and run_checkpoint(run_dir).is_file():
                try:  # a run scored before post-processing was chosen on val
                    with RunLock(run_dir):
                        score_postprocessed(run_dir)
                except RunInUse as busy:
                    print(f"{spec.name}: skipped, another process is on it ({busy})")
            continue
        try:
            if (run_dir / "config.yaml").is_file() and has_checkpoint(run_dir):
                train(resume_config(run_dir), resume=True, continue_with=again)
            else:  # a run that never wrote a checkpoint starts afresh
                config = load_config([protocol], [
                    f"method={spec.method}", f"data.root={data}", f"data.labeled={spec.labeled}",
                    f"train.seed={spec.seed}", *extra_overrides, *spec.overrides, f"out={run_dir}"])
                train(config, overwrite=True, continue_with=again)
            with RunLock(run_dir):  # no other lane resumes or scores it meanwhile
                environment = json.loads((run_dir / "environment.json").read_text())[-1]
                (run_dir / "hardware.txt").write_text(one_line(environment) + "\n")
                evaluate_run(run_dir, "test", "last")
                score_postprocessed(run_dir)
                evaluate_run(run_dir, "test", "best")  # last: its summary.json marks the run finished
        except RunInUse as busy:
            print(f"{spec.name}: skipped, another process is on it ({busy})")
    return folders
