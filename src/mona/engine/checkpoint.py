"""Atomic writes and safe checkpoint loading.

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written checkpoint. Checkpoints are loaded with
`weights_only=True`: no pickled code is executed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from mona.data.io import atomic_path
from mona.errors import MonaError

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (with the format version) under a temporary name, flushed to disk, then rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": FORMAT_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MonaError("checkpoint file is missing", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise MonaError("cannot read checkpoint: it holds Python objects besides tensors, and mona loads only "
                            "plain tensors (weights_only), so it is not a mona checkpoint", path) from None
        raise MonaError("cannot read checkpoint: the file is truncated or corrupt (UnpicklingError)", path) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile and OSError errors for damaged files
        raise MonaError(f"cannot read checkpoint: the file is truncated or corrupt ({exc.__class__.__name__})",
                        path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or "method" not in state:
        raise MonaError("not a mona checkpoint (or from an incompatible version)", path)
    return state


def load_weights(module: torch.nn.Module, saved: dict[str, torch.Tensor], path: Path, strict: bool = True) -> None:
    """Load weights, reporting shape or key mismatches (e.g. another number of classes) in one line."""
    own = module.state_dict()
    mismatched = [k for k, v in saved.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        key = mismatched[0]
        raise MonaError(
            f"checkpoint does not fit this model: {key} has shape {tuple(saved[key].shape)}, "
            f"expected {tuple(own[key].shape)} (another number of classes or method?)",
            path,
        )
    missing = [k for k in own if k not in saved]
    if strict and missing:
        raise MonaError(f"checkpoint lacks {len(missing)} entries such as {missing[0]} (another method?)", path)
    module.load_state_dict(saved, strict=False)


def network_weights(state: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """The weights of the method's network `name` in a checkpoint (its `name.` entries, without the
    prefix; e.g. `teacher`); empty when it keeps none."""
    prefix = f"{name}."
    return {key[len(prefix):]: value for key, value in state["method"].items() if key.startswith(prefix)}


def student_weights(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The student UNet's weights in a checkpoint (its `model.` entries, without the prefix)."""
    weights = network_weights(state, "model")
    if not weights:
        raise MonaError("checkpoint holds no UNet weights", path)
    return weights
