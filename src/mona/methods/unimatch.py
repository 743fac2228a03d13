"""UniMatch (Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023, arXiv 2208.09910), as its medical (ACDC) code runs it.

Source: LiheYoung/UniMatch@0324f3d, `more-scenarios/medical/unimatch.py` (lines below are that
file's), `dataset/acdc.py`, `dataset/transform.py`, `model/unet.py`, `configs/acdc.yaml`; every
setting and departure is listed in docs/methods/peers.md.

One network, no teacher. Per step (L116-L181), with a second unlabeled batch ("mix"):
1. eval-mode, no-grad pseudo-labels of the mix batch's weak view (L129-L134);
2. each of two strong views of the unlabeled batch takes, inside its own CutMix box, the pixels
   of the mix batch's strong view of the same index (L136-L139);
3. a train-mode pass of labeled + weak unlabeled with the feature perturbation (L145-L147), and
   one of both strong views (L149);
4. pseudo-labels = argmax of the (detached) train-mode weak prediction, its max softmax the
   confidence; inside each box they are the mix batch's (L151-L162);
5. loss = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2 (L164-L175): L_x = (CE + Dice) / 2 on
   labeled slices, the unlabeled terms Dice only, over pixels with confidence >= 0.95.
Strong views (dataset/acdc.py L55-L69, dataset/transform.py L25-L29): the slice quantised to 8
bits; with p 0.8 brightness and contrast factors U(0.5, 1.5) in random order; with p 0.5 a
Gaussian blur of sigma U(0.1, 2.0); the weak view is the quantised slice.
"""

from __future__ import annotations

import torch

from mona.augment.boxes import paste, random_boxes
from mona.augment.strong import apply_color_jitter, apply_gaussian_blur, draw_color_jitter, draw_gaussian_blur
from mona.augment.weak import draw_weak_affine, warp_views
from mona.config import Config, UniMatchConfig
from mona.losses.masked_dice import MaskedDiceLoss
from mona.losses.supervised import SupervisedSegLoss
from mona.methods.base import Method, Stage


def quantise(image: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] as 8-bit grey levels, truncated (`(img * 255).astype(uint8) / 255`)."""
    return torch.floor(image * 255) / 255


def draw_unimatch_strong(generator: torch.Generator, batch: int, device: torch.device | str) -> dict[str, dict]:
    """`unimatch_strong_view`'s random numbers for a batch, on `device`."""
    return {"jitter": draw_color_jitter(generator, batch, device, p=0.8, low=0.5, high=1.5, random_order=True),
            "blur": draw_gaussian_blur(generator, batch, device, p=0.5, sigma=(0.1, 2.0))}


def apply_unimatch_strong(image: torch.Tensor, draws: dict[str, dict]) -> torch.Tensor:
    """`unimatch_strong_view` with its random numbers drawn beforehand (`draw_unimatch_strong`)."""
    return quantise(apply_gaussian_blur(quantise(apply_color_jitter(image, draws["jitter"])), draws["blur"]))


def unimatch_strong_view(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """UniMatch's strong view of quantised slices (B, 1, H, W): jitter p 0.8 (brightness and contrast
    U(0.5, 1.5), random order; its saturation and hue leave grey images as they are), then blur p 0.5
    (sigma U(0.1, 2.0)), each result quantised again as PIL keeps 8 bits."""
    return apply_unimatch_strong(image, draw_unimatch_strong(generator, image.shape[0], image.device))


class UniMatch(Method):
    """One network trained from its own weak-view pseudo-labels, two CutMix strong views and a
    feature-perturbed decoder pass."""

    name = "unimatch"
    uses_unlabeled = True

    def __init__(self, num_classes: int, config: UniMatchConfig):
        super().__init__(num_classes)
        self.config = config
        self.sup_loss = SupervisedSegLoss(ce_weight=0.5, dice_weight=0.5)
        self.dice = MaskedDiceLoss(smooth=1e-5)

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps, the strong views' draws (the unlabeled batch twice, then the mix batch
        twice) and the two CutMix box sets, on the batch's device, in the order UniMatch's step uses them."""
        n_labeled, n_all_u = labeled["image"].shape[0], unlabeled["image"].shape[0]
        device, size = unlabeled["image"].device, tuple(unlabeled["image"].shape[-2:])
        weak = draw_weak_affine(n_labeled + n_all_u, generator, device)
        strong = draw_unimatch_strong(generator, 2 * n_all_u, device)
        boxes = [random_boxes(n_all_u // 2, size, generator, p=0.5, device=device) for _ in range(2)]
        return {"weak": weak, "strong": strong, "boxes": boxes}

    def training_step(self, labeled, unlabeled, progress, prepared):
        cfg = self.config
        images_l, labels_l, images_all_u = warp_views(prepared["weak"], labeled, unlabeled)
        images_all_u = quantise(images_all_u)
        images_u, images_mix = images_all_u.chunk(2)  # the stage draws both unlabeled batches at once
        n_labeled = images_l.shape[0]
        strong = apply_unimatch_strong(torch.cat([images_u, images_u, images_mix, images_mix]), prepared["strong"])
        strong_1, strong_2, strong_mix_1, strong_mix_2 = strong.chunk(4)
        box_1, box_2 = prepared["boxes"]

        self.model.eval()
        with torch.no_grad():
            probs_mix = torch.softmax(self.model(images_mix).logits.float(), dim=1)
        self.model.train()
        confidence_mix, pseudo_mix = probs_mix.max(dim=1)
        strong_1, strong_2 = paste(strong_1, strong_mix_1, box_1), paste(strong_2, strong_mix_2, box_2)

        clean, perturbed = self.model.forward_feature_perturbation(torch.cat([images_l, images_u]),
                                                                   cfg.feature_dropout)
        logits_l, logits_u, logits_fp = clean[:n_labeled], clean[n_labeled:], perturbed[n_labeled:]
        logits_s1, logits_s2 = self.model(torch.cat([strong_1, strong_2])).logits.chunk(2)

        confidence, pseudo = torch.softmax(logits_u.detach().float(), dim=1).max(dim=1)
        pseudo_1, confidence_1 = paste(pseudo, pseudo_mix, box_1), paste(confidence, confidence_mix, box_1)
        pseudo_2, confidence_2 = paste(pseudo, pseudo_mix, box_2), paste(confidence, confidence_mix, box_2)
        threshold = cfg.confidence_threshold

        sup = self.sup_loss(logits_l, labels_l)
        strong_loss_1 = self.dice(torch.softmax(logits_s1.float(), dim=1), pseudo_1, confidence_1 >= threshold)
        strong_loss_2 = self.dice(torch.softmax(logits_s2.float(), dim=1), pseudo_2, confidence_2 >= threshold)
        fp = self.dice(torch.softmax(logits_fp.float(), dim=1), pseudo, confidence >= threshold)
        loss = (sup + cfg.strong_weight * (strong_loss_1 + strong_loss_2) + cfg.fp_weight * fp) / 2
        return {"loss": loss, "sup": sup.detach(), "strong": ((strong_loss_1 + strong_loss_2) / 2).detach(),
                "fp": fp.detach(), "confident": (confidence >= threshold).float().mean()}


def stages(config: Config) -> list[Stage]:
    """One stage in the run folder itself; the unlabeled batch is drawn twice as large and split
    into UniMatch's unlabeled and mix batches."""
    return [Stage("", lambda num_classes: UniMatch(num_classes, config.unimatch), config.train.iterations,
                  config.data.batch_labeled, 2 * config.data.batch_unlabeled, nesterov=config.optim.nesterov)]
