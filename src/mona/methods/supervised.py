"""Supervised baseline: the UNet trained on labeled slices only (CE + Dice)."""

from __future__ import annotations

import torch

from mona.augment.weak import weak_augment
from mona.losses.supervised import SupervisedSegLoss
from mona.methods.base import Method


class Supervised(Method):
    name = "supervised"

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.seg_loss = SupervisedSegLoss()

    def training_step(self, labeled, unlabeled, progress, generator):
        image, label = weak_augment(labeled["image"], labeled["label"], generator)
        loss = self.seg_loss(self.model(image).logits, label)
        return {"loss": loss, "sup": loss.detach()}
