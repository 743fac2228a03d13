"""The machine and software a run trained on, recorded in every run folder (`environment.json`)."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

import torch

from mona import __version__

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo_field(name: str) -> str | None:
    """The first value of `name` in /proc/cpuinfo (e.g. "model name"), or None."""
    for line in _cpuinfo().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """GenuineIntel, AuthenticAMD, ... ("" where /proc/cpuinfo has none): bf16 speed depends on it."""
    return _cpuinfo_field("vendor_id") or ""


def cpu_flags() -> list[str]:
    """The CPU features that decide training speed (vector width, native bf16)."""
    words = set(_cpuinfo().split())
    return [flag for flag in CPU_FLAGS if flag in words]


def git_commit() -> str | None:
    """The commit of the mona source tree, when it is a git checkout (an editable install)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def describe(device: torch.device, precision: str) -> dict:
    """One record: when, mona version and commit, torch, platform, device, CPU, precision, threads."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mona": __version__,
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "precision": precision,
        "threads": torch.get_num_threads(),
    }


def one_line(record: dict) -> str:
    """`platform, torch X, cpu: NAME, N threads, precision`: the grid's `hardware.txt`."""
    chip = record["gpu"] or record["cpu"]
    return (f"{record['platform']}, torch {record['torch']}, {record['device']}: {chip}, {record['threads']} threads, "
            f"{record['precision']}")
