"""What a training method is, and how it declares its stages to the engine.

A method turns a labeled and an unlabeled batch into named losses; the engine does the rest
(loop, optimiser, schedule, AMP, EMA, validation, checkpoints, resume). A method holds the
student (`model`), an optional EMA `teacher` and any heads, queues or banks as submodules and
buffers, so its `state_dict` is the whole training state. A method module declares the
`Stage`s the engine runs in order (`stages(config)`); nothing here imports the engine.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from mona.losses.queue import FeatureQueue
from mona.models.unet import UNet


def frozen_copy(module: nn.Module) -> nn.Module:
    """A teacher copy of `module` (same weights, no gradients), updated by the engine's EMA."""
    teacher = copy.deepcopy(module)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def sigmoid_rampup(progress: float, rampup: float) -> float:
    """exp(-5 (1 - x)^2) with x = progress / rampup clipped to [0, 1] (Laine & Aila 2017).

    `rampup` is a fraction of the run: 0.4 reaches the full weight at 40% of training,
    whatever the number of iterations.
    """
    if rampup <= 0:
        return 1.0
    x = min(max(progress / rampup, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - x) ** 2)


class Method(nn.Module):
    name = "base"
    uses_unlabeled = False
    ema_warmup = True  # EMA decay min(1 - 1/(step + 1), ema) (Tarvainen & Valpola); False: `ema` from step 0

    def __init__(self, num_classes: int, ema: float | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.model = UNet(1, num_classes)
        self.ema = ema
        self.teacher = frozen_copy(self.model) if ema is not None else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: everything but the (frozen) teacher side."""
        return [p for p in self.parameters() if p.requires_grad]

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher module, student module) pairs the engine updates by EMA after each step."""
        return [(self.teacher, self.model)] if self.teacher is not None else []

    def start_from(self, student: dict[str, torch.Tensor], load: Callable[[nn.Module, dict], None]) -> None:
        """Start this stage from an earlier student's UNet weights: the student and the teacher
        (a method with more networks starts them all). `load(module, weights)` loads with the
        engine's checks."""
        load(self.model, student)
        if self.teacher is not None:
            self.teacher.load_state_dict(self.model.state_dict())

    def weights(self) -> dict[str, torch.Tensor]:
        """`state_dict()` without the memories (the FIFO queues and banks of embeddings): every
        network of the method, what `best.pt` keeps. The memories serve only an exact resume, which
        reads `last.pt`; in MONA's stage 2 they are ~90 % of the state (the negative banks)."""
        memories = tuple(f"{name}." for name, module in self.named_modules() if isinstance(module, FeatureQueue))
        return {key: value for key, value in self.state_dict().items() if not key.startswith(memories)}

    def prepare(self, labeled: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor] | None, progress: float,
                generator: torch.Generator) -> Any:
        """What the step needs decided on the host, which the engine computes before `training_step`
        and passes to it: by default the step's generator itself (the step draws as it goes).

        A method that draws its random numbers here (tensors on the batch's device), and computes
        here what its schedule makes of `progress`, leaves a step that `torch.compile` holds in one
        graph: a compiled graph ends at each draw from a generator, and Python arithmetic on
        `progress` recompiles the step (issue #48). Every method does so but MONA's stage 2, whose
        L_contrast draws as many numbers as its data gives it anchors.
        """
        return generator

    def step(self, labeled: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor] | None, progress: float,
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        """`prepare` then `training_step`, as the engine runs them (for tests and benchmarks)."""
        return self.training_step(labeled, unlabeled, progress, self.prepare(labeled, unlabeled, progress, generator))

    def training_step(
        self,
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: float,
        prepared: Any,
    ) -> dict[str, torch.Tensor]:
        """Named scalar losses, the total under "loss". `progress` = iteration / total; `prepared` is
        what `prepare` returned for this step."""
        raise NotImplementedError


@dataclass(frozen=True)
class Stage:
    """One stage of a method as the engine runs it.

    `name` is the stage's sub-folder of the run ("" for a one-stage method: the run folder
    itself); `build(num_classes)` makes a fresh `Method`; `init_from` names an earlier stage
    of the same run, or a run folder or checkpoint file, whose student starts this stage, taken
    from that stage's `init_checkpoint` ("last", or "best" on val as BCP starts its self-training).
    `constant_lr` keeps `optim.lr` for the whole stage (BCP, ABD) instead of the poly decay.
    """

    name: str
    build: Callable[[int], Method]
    iterations: int
    batch_labeled: int
    batch_unlabeled: int
    nesterov: bool = False
    init_from: str = ""
    init_checkpoint: str = "last"
    constant_lr: bool = False
