"""The one error type users see: a message naming the file and the problem, no traceback."""

from __future__ import annotations

from pathlib import Path


class MonaError(Exception):
    """A problem with the user's input (file, config, checkpoint) that the CLI reports in one line
    and exits with `exit_code` (2, as argparse does for a bad command line)."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class LabelRangeError(MonaError):
    """A label volume holds values outside 0..C-1 (a wrong class count, or masks in other values)."""


class RunInUse(MonaError):
    """Another live process holds the run folder's lock (`mona reproduce` lanes skip such a run)."""


class RunInterrupted(MonaError):
    """Training stopped by Ctrl-C or SIGTERM; exits 130 as shells expect of an interrupted command."""

    exit_code = 130
