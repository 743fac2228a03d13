"""Supervised baseline: the UNet trained on labeled slices only (CE + Dice)."""

from __future__ import annotations

from mona.augment.weak import draw_weak_affine, warp_affine
from mona.config import Config
from mona.losses.supervised import SupervisedSegLoss
from mona.methods.base import Method, Stage


class Supervised(Method):
    name = "supervised"

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.seg_loss = SupervisedSegLoss()

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps, on the batch's device."""
        return draw_weak_affine(labeled["image"].shape[0], generator, labeled["image"].device)

    def training_step(self, labeled, unlabeled, progress, prepared):
        image, label = warp_affine(prepared, labeled["image"], labeled["label"])
        loss = self.seg_loss(self.model(image).logits, label)
        return {"loss": loss, "sup": loss.detach()}


def stages(config: Config) -> list[Stage]:
    """One stage in the run folder itself."""
    return [Stage("", Supervised, config.train.iterations, config.data.batch_labeled, config.data.batch_unlabeled,
                  nesterov=config.optim.nesterov)]
