"""Soft Dice over the pixels of a mask, the Dice that UniMatch, BCP and ABD train with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedDiceLoss(nn.Module):
    """1 - Dice per class over the masked pixels of the whole batch, averaged over all classes.

    For each class c (background included), with p the softmax probability, t the one-hot target
    and m the mask, all summed over every pixel of every image of the batch:
    `d_c = (2 sum p t m + smooth) / (sum p^2 m + sum t^2 m + smooth)`; the loss is the mean of
    `1 - d_c`. Without a mask every pixel counts.

    The three peers differ only in what they feed it:
    - UniMatch drops the pixels whose pseudo-label confidence is under 0.95 (its `ignore` map;
      smooth 1e-5) (Yang et al., CVPR 2023, arXiv 2208.09910; LiheYoung/UniMatch@0324f3d
      `more-scenarios/medical/util/utils.py` L14-L50). Dropping a pixel and giving it weight 0
      are the same sums.
    - BCP masks each region of a copy-paste image (smooth 1e-10) (Bai et al., CVPR 2023,
      arXiv 2305.00673; DeepMed-Lab-ECNU/BCP@7879f98 `code/utils/losses.py` L102-L134). Until
      BCP's commit a925e30 (2023-10-29), and still in ABD's code (chy-upc/ABD@4efd525
      `code/utils/losses.py` L169-L175), the background class ignored the mask (its one-hot
      encoding of the mask was all ones for class 0): `background_unmasked=True` reproduces that.
    - ABD's cross pseudo-supervision uses it without a mask (smooth 1e-5).

    Args:
        smooth: added to numerator and denominator.
        background_unmasked: class 0 sums over every pixel, whatever the mask.

    Shapes: `probs` (B, C, H, W) float, `target` (B, H, W) long in [0, C), `mask` (B, H, W) (bool or
    {0, 1} float) or None. Returns a scalar; runs in float32 under autocast.

    Example:
        >>> dice = MaskedDiceLoss(smooth=1e-5)
        >>> probs = torch.softmax(torch.randn(2, 4, 8, 8), dim=1)
        >>> target = torch.randint(0, 4, (2, 8, 8))
        >>> bool(dice(probs, target, torch.zeros(2, 8, 8)) == 0)  # nothing to score: 1 - smooth / smooth
        True
    """

    def __init__(self, smooth: float = 1e-5, background_unmasked: bool = False):
        super().__init__()
        self.smooth = smooth
        self.background_unmasked = background_unmasked

    def forward(self, probs: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if probs.dim() != 4 or target.shape != (probs.shape[0], *probs.shape[2:]):
            raise ValueError(f"expected probs (B, C, H, W) and target (B, H, W), got {tuple(probs.shape)} and "
                             f"{tuple(target.shape)}")
        with torch.autocast(device_type=probs.device.type, enabled=False):
            probs = probs.float()
            onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).float()
            dims = (0, 2, 3)
            if mask is None:
                intersection = (probs * onehot).sum(dims)
                denominator = (probs * probs).sum(dims) + onehot.sum(dims)
            else:
                weight = mask.float().unsqueeze(1).expand_as(probs)
                if self.background_unmasked:
                    weight = torch.cat([torch.ones_like(weight[:, :1]), weight[:, 1:]], dim=1)
                intersection = (probs * onehot * weight).sum(dims)
                denominator = (probs * probs * weight).sum(dims) + (onehot * weight).sum(dims)
            dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
            return (1 - dice).mean()
