"""ABD, adaptive bidirectional displacement on top of BCP (Chi et al., CVPR 2024, arXiv 2405.00378),
as its BCP-based ACDC code runs it.

Source: chy-upc/ABD@4efd525, `code/train_ACDC_BCP.py` (lines below are that file's),
`code/utils/displacement.py`, `code/dataloaders/dataset.py`; every setting and departure is
listed in docs/methods/peers.md.

Stage 1 is BCP's pre-training (L189-L295) with ABD's Dice, whose background term ignores the
region mask (`abd.background_dice`). Stage 2, `ABDSelfTrain` (L345-L437), trains two students from
stage 1's best checkpoint: student 1 (`model`, the one validated and kept) on BCP's copy-paste
images of the weak view, student 2 (`model_2`) on the same copy-paste (same box) of a strong view
(cutout with {0, 1} noise and background label inside, then brightness and contrast U(0.2, 1.8)
in random order). The EMA teacher of student 1 pseudo-labels the weak and the strong unlabeled
halves (four forwards, L364-L372). Per student: BCP's loss (L387-L408), (Dice + CE) / 2; cross
pseudo-supervision with the other student's argmax on the mixed images (L411-L412); both
students on the displaced images (`adaptive_bidirectional_displacement`, L414-L420) with cross
pseudo-supervision again (L422-L423). Loss = both students' sums, weights 1 (L425-L427);
constant learning rate.
"""

from __future__ import annotations

import torch

from mona.augment.boxes import copy_paste_box, paste, random_boxes
from mona.augment.displacement import adaptive_bidirectional_displacement
from mona.augment.strong import apply_color_jitter, draw_color_jitter
from mona.augment.weak import draw_weak_affine, warp_views
from mona.config import ABDConfig, Config
from mona.losses.copy_paste import CopyPasteLoss
from mona.losses.masked_dice import MaskedDiceLoss
from mona.methods.base import Method, Stage
from mona.methods.bcp import bidirectional_copy_paste, copy_paste_stages, teacher_pseudo_labels
from mona.models.unet import UNet
from mona.randomness import device_generator, host_to_device


def draw_abd_strong(generator: torch.Generator, shape: tuple[int, ...], device: torch.device | str,
                    cutout_probability: float = 0.5, jitter: float = 0.8) -> dict:
    """`abd_strong_view`'s random numbers for a batch of images of `shape`, on `device`."""
    batch, size = shape[0], tuple(shape[-2:])
    return {"box": random_boxes(batch, size, generator, p=cutout_probability, redraw_area=True, device=device),
            "noise": torch.randint(0, 2, shape, generator=device_generator(generator, device), device=device),
            "jitter": draw_color_jitter(generator, batch, device, p=1.0, low=1 - jitter, high=1 + jitter,
                                        random_order=True)}


def apply_abd_strong(images: torch.Tensor, labels: torch.Tensor, draws: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`abd_strong_view` with its random numbers drawn beforehand (`draw_abd_strong`)."""
    cut = paste(images, draws["noise"].to(images.dtype), draws["box"])
    return apply_color_jitter(cut, draws["jitter"]), torch.where(draws["box"], torch.zeros_like(labels), labels)


def abd_strong_view(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    cutout_probability: float = 0.5, jitter: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """ABD's strong view (dataset.py L110-L136, L101-L108, L180-L181) of (B, 1, H, W) images and their
    (B, H, W) labels: with probability `cutout_probability` a box (area U(0.02, 0.4), ratio
    U(0.3, 1/0.3)) filled with random 0/1 pixels and labelled background; then, always, brightness
    and contrast factors U(1 - jitter, 1 + jitter) in random order."""
    draws = draw_abd_strong(generator, tuple(images.shape), images.device, cutout_probability, jitter)
    return apply_abd_strong(images, labels, draws)


class ABDSelfTrain(Method):
    """Stage 2: two students on weak and strong copy-paste views, cross-supervised, then displaced."""

    name = "abd"
    uses_unlabeled = True
    ema_warmup = False

    def __init__(self, num_classes: int, config: ABDConfig):
        super().__init__(num_classes, ema=config.ema)
        self.config = config
        self.model_2 = UNet(1, num_classes)
        self.mix_loss = CopyPasteLoss(background_unmasked=config.background_dice == "unmasked")
        self.cross_dice = MaskedDiceLoss(smooth=1e-5)

    def start_from(self, student, load):
        """Both students and the teacher start from stage 1's student (L331-L333)."""
        super().start_from(student, load)
        load(self.model_2, student)

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps, the strong view's draws, the copy-paste box and the displacement's
        per-image coins, on the batch's device, in the order the step uses them."""
        cfg, image = self.config, labeled["image"]
        batch, device = image.shape[0] + unlabeled["image"].shape[0], image.device
        weak = draw_weak_affine(batch, generator, device)
        strong = draw_abd_strong(generator, (batch, *image.shape[1:]), device, cfg.cutout_probability,
                                 cfg.jitter_strength)
        box = copy_paste_box(tuple(image.shape[-2:]), generator, cfg.box_fraction, device)
        mixed = 2 * (image.shape[0] // 2)  # each copy-paste pair: a's and b's mixed images
        adaptive = host_to_device(torch.rand(mixed, generator=generator) < cfg.adaptive_probability, device)
        return {"weak": weak, "strong": strong, "box": box, "adaptive": adaptive}

    def training_step(self, labeled, unlabeled, progress, prepared):
        cfg = self.config
        images_l, labels_l, images_u = warp_views(prepared["weak"], labeled, unlabeled)
        n_labeled = images_l.shape[0]
        unknown = labels_l.new_zeros((images_u.shape[0], *labels_l.shape[1:]))
        strong, strong_labels = apply_abd_strong(torch.cat([images_l, images_u]), torch.cat([labels_l, unknown]),
                                                 prepared["strong"])
        strong_l, strong_u, strong_labels_l = strong[:n_labeled], strong[n_labeled:], strong_labels[:n_labeled]
        box = prepared["box"]

        weight = cfg.unlabeled_weight
        mixed_1, mixed_logits_1, dice_1, ce_1 = bidirectional_copy_paste(
            self.model, self.mix_loss, images_l, labels_l, images_u, teacher_pseudo_labels(self.teacher, images_u),
            box, weight)
        mixed_2, mixed_logits_2, dice_2, ce_2 = bidirectional_copy_paste(
            self.model_2, self.mix_loss, strong_l, strong_labels_l, strong_u,
            teacher_pseudo_labels(self.teacher, strong_u), box, weight)
        inputs_1, logits_1, inputs_2, logits_2 = map(torch.cat, (mixed_1, mixed_logits_1, mixed_2, mixed_logits_2))
        bcp_1, bcp_2 = (dice_1 + ce_1) / 2, (dice_2 + ce_2) / 2
        probs_1, probs_2 = torch.softmax(logits_1.float(), dim=1), torch.softmax(logits_2.float(), dim=1)
        confidence_1, pseudo_1 = probs_1.detach().max(dim=1)
        confidence_2, pseudo_2 = probs_2.detach().max(dim=1)
        cross_1, cross_2 = self.cross_dice(probs_1, pseudo_2), self.cross_dice(probs_2, pseudo_1)

        displaced = adaptive_bidirectional_displacement(inputs_1, inputs_2, confidence_1, confidence_2,
                                                        logits_1.detach(), logits_2.detach(), prepared["adaptive"],
                                                        cfg.patch_grid, cfg.top_patches)
        displaced_1 = torch.softmax(self.model(displaced).logits.float(), dim=1)
        displaced_2 = torch.softmax(self.model_2(displaced).logits.float(), dim=1)
        cross_3 = self.cross_dice(displaced_1, displaced_2.detach().argmax(dim=1))
        cross_4 = self.cross_dice(displaced_2, displaced_1.detach().argmax(dim=1))
        loss = bcp_1 + cross_1 + cross_3 + bcp_2 + cross_2 + cross_4
        return {"loss": loss, "bcp_1": bcp_1.detach(), "bcp_2": bcp_2.detach(),
                "cross": (cross_1 + cross_2).detach(), "cross_displaced": (cross_3 + cross_4).detach()}


def stages(config: Config) -> list[Stage]:
    """Stage 1 (`pretrain/`, BCP's with ABD's Dice) then stage 2 (`selftrain/`) from stage 1's best student."""
    return copy_paste_stages(config, config.abd, lambda num_classes: ABDSelfTrain(num_classes, config.abd))
