"""BCP, bidirectional copy-paste (Bai et al., CVPR 2023, arXiv 2305.00673), as its ACDC code runs it.

Source: DeepMed-Lab-ECNU/BCP@7879f98, `code/ACDC_BCP_train.py` (lines below are that file's);
every setting and departure is listed in docs/methods/peers.md.

Stage 1, `BCPPretrain` (`pre_train`, L193-L301): only the labeled half of the batch is used,
split in two (a, b); b's crop inside one box of 2/3 of the side is pasted into a (L243-L247), and
the mixed image is supervised by a's label outside the box and b's inside, both weighted 1
(L249-L251). The unlabeled half of the batch is loaded and ignored there; we do not load it.

Stage 2, `BCPSelfTrain` (`self_train`, L303-L443): starts from stage 1's best checkpoint on val
(student and teacher, L332-L333). The EMA teacher (train mode, decay 0.99 from the first step,
L343-L344, L390) pseudo-labels the two unlabeled halves separately (L363-L366), keeping each
class's largest connected component. Two mixed images (L372-L373): a labeled crop pasted into
an unlabeled slice (`in_unlabeled`) and an unlabeled crop pasted into a labeled slice
(`in_labeled`), the same box for both; the student sees them in two forwards (L374-L375). Each
region is supervised by its truth (weight 1) or pseudo-label (weight `unlabeled_weight` 0.5)
(L376-L377); the loss is (Dice + CE) / 2 (L380-L383). The learning rate stays constant in both
stages (no line of the file changes it).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from mona.augment.boxes import copy_paste_box, paste
from mona.augment.weak import draw_weak_affine, warp_affine, warp_views
from mona.config import ABDConfig, BCPConfig, Config
from mona.evaluation.postprocess import keep_largest_component
from mona.losses.copy_paste import CopyPasteLoss
from mona.methods.base import Method, Stage
from mona.randomness import host_to_device


def largest_component_labels(logits: torch.Tensor, largest_component: bool = True) -> torch.Tensor:
    """Hard pseudo-labels (B, H, W) of logits (B, C, H, W): the argmax, each foreground class then
    keeping only its largest 8-connected component per image (BCP's `get_ACDC_masks(nms=1)`,
    L89-L117). The components are found on the host (scipy), as BCP finds them (skimage)."""
    labels = logits.argmax(dim=1)
    if not largest_component:
        return labels
    classes = range(1, logits.shape[1])
    kept = np.stack([keep_largest_component(image, classes) for image in labels.cpu().numpy()])
    return host_to_device(torch.from_numpy(kept), labels.device)


def halves(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCP's sub-batches a and b: the first and the second half of a batch (L241-L242, L358-L361)."""
    half = tensor.shape[0] // 2
    if half == 0:
        raise ValueError(f"copy-paste needs at least 2 images per batch, got {tensor.shape[0]}")
    return tensor[:half], tensor[half:2 * half]


class BCPPretrain(Method):
    """Stage 1: supervised copy-paste between labeled slices."""

    name = "bcp_pretrain"

    def __init__(self, num_classes: int, box_fraction: float = 2 / 3, background_unmasked: bool = False):
        super().__init__(num_classes)
        self.box_fraction = box_fraction
        self.mix_loss = CopyPasteLoss(background_unmasked)

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps and the copy-paste box, on the batch's device."""
        image = labeled["image"]
        weak = draw_weak_affine(image.shape[0], generator, image.device)
        box = copy_paste_box(tuple(image.shape[-2:]), generator, self.box_fraction, image.device)
        return {"weak": weak, "box": box}

    def training_step(self, labeled, unlabeled, progress, prepared):
        images, labels = warp_affine(prepared["weak"], labeled["image"], labeled["label"])
        (image_a, image_b), (label_a, label_b) = halves(images), halves(labels)
        box = prepared["box"]
        logits = self.model(paste(image_a, image_b, box)).logits
        dice, ce = self.mix_loss(logits, label_a, label_b, box)
        return {"loss": (dice + ce) / 2, "dice": dice.detach(), "ce": ce.detach()}


def teacher_pseudo_labels(teacher: torch.nn.Module, images_u: torch.Tensor,
                          largest_component: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's pseudo-labels of the unlabeled halves a and b, one forward each (L362-L366), read on
    the host once for both."""
    with torch.no_grad():
        logits = torch.cat([teacher(half).logits for half in halves(images_u)])
    return halves(largest_component_labels(logits, largest_component))


def bidirectional_copy_paste(model: torch.nn.Module, mix_loss: CopyPasteLoss, images_l: torch.Tensor,
                             labels_l: torch.Tensor, images_u: torch.Tensor, pseudo: tuple[torch.Tensor, torch.Tensor],
                             box: torch.Tensor, unlabeled_weight: float):
    """BCP's two mixed images through `model` (L372-L377): a labeled crop pasted into unlabeled slice a,
    an unlabeled crop pasted into labeled slice b, two forwards; each region scored against its truth
    (weight 1) or its pseudo-label (`unlabeled_weight`). Returns the mixed inputs and their logits (each
    a pair: a's, b's) and the summed Dice and CE."""
    (image_a, image_b), (label_a, label_b) = halves(images_l), halves(labels_l)
    unlabeled_a, unlabeled_b = halves(images_u)
    pseudo_a, pseudo_b = pseudo
    in_unlabeled = paste(unlabeled_a, image_a, box)
    in_labeled = paste(image_b, unlabeled_b, box)
    logits_unlabeled = model(in_unlabeled).logits
    logits_labeled = model(in_labeled).logits
    dice_u, ce_u = mix_loss(logits_unlabeled, pseudo_a, label_a, box, outside_weight=unlabeled_weight)
    dice_l, ce_l = mix_loss(logits_labeled, label_b, pseudo_b, box, inside_weight=unlabeled_weight)
    return (in_unlabeled, in_labeled), (logits_unlabeled, logits_labeled), dice_u + dice_l, ce_u + ce_l


class BCPSelfTrain(Method):
    """Stage 2: EMA teacher pseudo-labels and bidirectional copy-paste between labeled and unlabeled slices."""

    name = "bcp"
    uses_unlabeled = True
    ema_warmup = False

    def __init__(self, num_classes: int, ema: float = 0.99, unlabeled_weight: float = 0.5,
                 box_fraction: float = 2 / 3, largest_component: bool = True, background_unmasked: bool = False):
        super().__init__(num_classes, ema=ema)
        self.unlabeled_weight, self.box_fraction, self.largest_component = (unlabeled_weight, box_fraction,
                                                                            largest_component)
        self.mix_loss = CopyPasteLoss(background_unmasked)

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps (labeled then unlabeled images) and the copy-paste box, on the batch's device."""
        image = labeled["image"]
        weak = draw_weak_affine(image.shape[0] + unlabeled["image"].shape[0], generator, image.device)
        box = copy_paste_box(tuple(image.shape[-2:]), generator, self.box_fraction, image.device)
        return {"weak": weak, "box": box}

    def training_step(self, labeled, unlabeled, progress, prepared):
        images_l, labels_l, images_u = warp_views(prepared["weak"], labeled, unlabeled)
        pseudo = teacher_pseudo_labels(self.teacher, images_u, self.largest_component)
        box = prepared["box"]
        _, _, dice, ce = bidirectional_copy_paste(self.model, self.mix_loss, images_l, labels_l, images_u, pseudo,
                                                  box, self.unlabeled_weight)
        return {"loss": (dice + ce) / 2, "dice": dice.detach(), "ce": ce.detach()}


def pretrain_iterations(requested: int, iterations: int) -> int:
    """Stage 1's length: `requested`, or 0 = a third of stage 2's (BCP's and ABD's 10000 before 30000)."""
    return requested or max(1, round(iterations / 3))


def copy_paste_stages(config: Config, section: BCPConfig | ABDConfig,
                      build_selftrain: Callable[[int], Method]) -> list[Stage]:
    """BCP's two stages, as BCP and ABD run them: stage 1 (`pretrain/`, constant lr, labeled slices
    only) then stage 2 (`selftrain/`, constant lr) from stage 1's best student on val."""
    data = config.data
    unmasked = section.background_dice == "unmasked"
    return [
        Stage("pretrain", lambda num_classes: BCPPretrain(num_classes, section.box_fraction, unmasked),
              pretrain_iterations(section.pretrain_iterations, config.train.iterations), data.batch_labeled,
              data.batch_unlabeled, constant_lr=True),
        Stage("selftrain", build_selftrain, config.train.iterations, data.batch_labeled, data.batch_unlabeled,
              init_from="pretrain", init_checkpoint="best", constant_lr=True),
    ]


def stages(config: Config) -> list[Stage]:
    """Stage 1 (`pretrain/`) then stage 2 (`selftrain/`), which starts from stage 1's best student on val."""
    cfg = config.bcp
    return copy_paste_stages(config, cfg, lambda num_classes: BCPSelfTrain(
        num_classes, cfg.ema, cfg.unlabeled_weight, cfg.box_fraction, cfg.largest_component,
        cfg.background_dice == "unmasked"))
