"""Training methods and the factory the engine uses."""

from __future__ import annotations

from mona.config import Config
from mona.methods.base import Method


def build_method(config: Config, num_classes: int) -> Method:
    if config.method == "supervised":
        from mona.methods.supervised import Supervised

        return Supervised(num_classes)
    if config.method == "mean_teacher":
        from mona.methods.mean_teacher import MeanTeacher

        return MeanTeacher(num_classes, config.mean_teacher)
    raise ValueError(f"build_method does not build {config.method!r}; MONA's stages are built by mona.methods.mona")
