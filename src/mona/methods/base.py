"""A method turns a labeled and an unlabeled batch into named losses; the engine does the rest.

The engine owns the loop, optimiser, schedule, AMP, EMA, validation and checkpoints. A
method holds the student (`model`), an optional EMA `teacher` and any heads, queues or
banks as submodules and buffers, so its `state_dict` is the whole training state.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mona.models.unet import UNet


class Method(nn.Module):
    name = "base"
    uses_unlabeled = False

    def __init__(self, num_classes: int, ema: float | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.model = UNet(1, num_classes)
        self.ema = ema
        self.teacher = self._make_teacher() if ema is not None else None

    def _make_teacher(self) -> nn.Module:
        teacher = copy.deepcopy(self.model)
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: everything but the (frozen) teacher side."""
        return [p for p in self.parameters() if p.requires_grad]

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher module, student module) pairs the engine updates by EMA after each step."""
        return [(self.teacher, self.model)] if self.teacher is not None else []

    def training_step(
        self,
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: float,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Named scalar losses, the total under "loss". `progress` = iteration / total."""
        raise NotImplementedError
