"""Schedules as functions of the run's progress (iteration / total), never of fixed counts."""

from __future__ import annotations

import torch


def poly_lr(base_lr: float, progress: float, power: float = 0.9) -> float:
    """Poly decay lr * (1 - t/T)^power."""
    return base_lr * (1.0 - min(progress, 1.0)) ** power


def ema_momentum(momentum: float, step: int) -> float:
    """Tarvainen & Valpola's warm-up: min(1 - 1/(step + 1), m), so the early teacher follows the student."""
    return min(1.0 - 1.0 / (step + 1), momentum)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, for parameters and floating-point buffers."""
    pairs = [
        (t, s)
        for t, s in zip(
            list(teacher.parameters()) + list(teacher.buffers()), list(student.parameters()) + list(student.buffers())
        )
        if t.is_floating_point()
    ]
    torch._foreach_lerp_([t for t, _ in pairs], [s.detach() for _, s in pairs], 1.0 - momentum)
