"""A run folder belongs to one run: its lock, its stages, its text log.

Layout: `RUN/config.yaml` (the resolved config, absolute paths), `RUN/stages.json` (the
stages in order and the sub-folder of each; "" is the run folder itself), `RUN/environment.json`
(the machine and software of each start or resume), `RUN/train.log` (what the console showed,
without progress bars) and `RUN/.lock` (the PID of the process training it). Each stage folder
holds its `best.pt`, `last.pt`, `metrics.jsonl` and `tb/`.

Runs written before `stages.json` existed are read too: MONA's `pretrain/` and `finetune/`
folders, or the run folder itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from tqdm import tqdm

from mona.data.io import atomic_path
from mona.errors import MonaError, RunInUse

LEGACY_STAGES = ("pretrain", "finetune")
# Files that mark a folder as a mona run (anything else in a non-empty --out is the user's).
RUN_MARKERS = ("config.yaml", "stages.json", "last.pt", "metrics.jsonl")


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def run_root(path: str | Path) -> Path:
    """The run folder that `path` belongs to: `path` itself, or its parent when `path` is a stage folder."""
    path = Path(path).absolute()
    parent = path.parent
    if (parent / "config.yaml").is_file() and path.name in {s["name"] for s in read_stages(parent)}:
        return parent
    return path


def read_stages(run_dir: Path) -> list[dict]:
    """The stages recorded in `RUN/stages.json` (name, folder, method, iterations), oldest first;
    for runs from before that file, the stage folders found."""
    path = Path(run_dir) / "stages.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise MonaError(f"unreadable stage record ({error})", path) from None
    found = [{"name": name} for name in LEGACY_STAGES if (Path(run_dir) / name).is_dir()]
    return found or [{"name": ""}]


def stage_folders(run_dir: str | Path) -> list[Path]:
    """The folders of a run's stages, in training order (the run folder itself for one stage)."""
    run_dir = Path(run_dir)
    return [run_dir / stage["name"] if stage["name"] else run_dir for stage in read_stages(run_dir)]


def last_validated(stage_dir: Path) -> int:
    """The iteration of a stage's last val record in its `metrics.jsonl` (0 for none); a torn line is skipped."""
    path = stage_dir / "metrics.jsonl"
    done = 0
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("split") == "val":
            done = max(done, int(record["iteration"]))
    return done


def unfinished_stages(run_dir: Path) -> str:
    """What a run has left to train, e.g. "stage finetune at iteration 40 of 120"; "" when every stage
    recorded in stages.json has validated its last iteration (a stage validates when it ends). Runs
    from before stages.json recorded iterations count as finished."""
    left = []
    for stage in read_stages(run_dir):
        if "iterations" not in stage:
            continue
        done = last_validated(run_dir / stage["name"] if stage["name"] else run_dir)
        if done < stage["iterations"]:
            which = f"stage {stage['name']}" if stage["name"] else "training"
            left.append(f"{which} at iteration {done} of {stage['iterations']}" if done else f"{which} not begun")
    if left and (run_dir / ".lock").is_file():
        left.append("its .lock says a process is training it")
    return "; ".join(left)


def record_stages(run_dir: Path, stages: list[dict]) -> None:
    """Add `stages` to `RUN/stages.json`, keeping earlier ones (a `--stage finetune` after a
    `--stage pretrain` run records both); a stage recorded before takes its new values (a resumed
    run given more iterations)."""
    known = read_stages(run_dir) if (run_dir / "stages.json").is_file() else []
    given = {stage["name"]: stage for stage in stages}
    names = {stage["name"] for stage in known}
    merged = [{**stage, **given.get(stage["name"], {})} for stage in known]
    merged += [stage for stage in stages if stage["name"] not in names]
    with atomic_path(run_dir / "stages.json") as tmp:
        tmp.write_text(json.dumps(merged, indent=2) + "\n")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """`RUN/.lock`, created exclusively and holding `pid host`: one live process per run folder.

    A lock whose process is gone (killed, machine rebooted) is taken over with a note. A lock
    from another host cannot be checked and is refused; delete it by hand if that run is dead.
    """

    def __init__(self, run_dir: Path, say=print):
        self.path = run_dir / ".lock"
        self.say = say
        self.held = False

    def __enter__(self) -> RunLock:
        run_dir = self.path.parent
        if run_dir.exists() and not run_dir.is_dir():
            raise MonaError("the run folder is a file; choose another --out", run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MonaError(f"cannot make the run folder ({exc.strerror or exc})", run_dir) from None
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(me + "\n")
            self.held = True
            return self
        raise MonaError("could not take the run's lock", self.path)

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, host = (self.path.read_text().split() + ["", ""])[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = -1, ""
        if host == socket.gethostname() and pid > 0 and _process_alive(pid):
            raise RunInUse(f"this run folder is in use by process {pid} (its .lock); wait for it or stop it",
                           self.path.parent)
        if host and host != socket.gethostname():
            raise MonaError(f"this run folder is locked by a process on host {host}; if that run is dead, "
                            f"delete {self.path}", self.path.parent)
        self.say(f"note: taking over the lock of a process that is gone ({self.path})")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                mine = int(self.path.read_text().split()[0]) == os.getpid()
            except (OSError, ValueError, IndexError):
                mine = False
            if mine:  # a lock another process took over (ours looked stale to it) stays
                self.path.unlink(missing_ok=True)
            self.held = False


def claim(run_dir: Path, resume: bool, overwrite: bool, say=print) -> None:
    """Check that `run_dir` may be written by this run (the lock is already held).

    A new run needs an empty (or absent) folder; `overwrite` deletes an earlier run's files
    first (only in a folder that is a mona run); `resume` needs an earlier run, whose temporary
    files left by a killed process (`.*.tmp*`) are removed.
    """
    entries = [p for p in run_dir.iterdir() if p.name != ".lock"]
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise MonaError("not a run folder (no config.yaml): nothing to resume", run_dir)
        for stale in run_dir.rglob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        return
    if not entries:
        return
    if not overwrite:
        raise MonaError("the run folder is not empty: continue it with --resume (Python: mona.train(config, "
                        "resume=True)), replace it with --overwrite (overwrite=True; deletes the earlier run's "
                        "checkpoints and logs), or choose another --out (config.out)", run_dir)
    if not is_run_folder(run_dir):
        raise MonaError("--overwrite only replaces a mona run folder, and this one holds other files; "
                        "choose another --out", run_dir)
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    say(f"--overwrite: deleted the earlier run in {run_dir}")


class RunLog:
    """What a run says: printed above the progress bar and appended, time-stamped, to `RUN/train.log`.
    With `path` None (a data-parallel rank other than 0) it says nothing."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, message: str) -> None:
        if self.path is not None:
            tqdm.write(message)
            self.record(message)

    def record(self, message: str) -> None:
        """Only into `train.log` (for what the console shows another way, e.g. the final error line)."""
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
