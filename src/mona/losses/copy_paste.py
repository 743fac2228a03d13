"""BCP's loss on a copy-paste image: Dice and cross-entropy per region, each with its own target and weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona.losses.masked_dice import MaskedDiceLoss


class CopyPasteLoss(nn.Module):
    """Dice and CE of a copy-paste image against one target outside the box and another inside.

    Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation",
    CVPR 2023 (arXiv 2305.00673); `mix_loss` in DeepMed-Lab-ECNU/BCP@7879f98
    `code/ACDC_BCP_train.py` L167-L179, also used by ABD (Chi et al., CVPR 2024;
    chy-upc/ABD@4efd525 `code/train_ACDC_BCP.py` L163-L175).

    With o the pixels outside the box and i those inside (summed over the whole batch):
    - dice = w_out * Dice(p, t_out | o) + w_in * Dice(p, t_in | i)  (`MaskedDiceLoss`, smooth 1e-10)
    - ce = w_out * sum(CE(t_out) o) / (sum o + 1e-16) + w_in * sum(CE(t_in) i) / (sum i + 1e-16)
    BCP weights a pseudo-labelled region 0.5 and a labelled one 1 (`u_weight`), and trains on
    (dice + ce) / 2. `background_unmasked` is the background Dice of BCP's paper-time code and of
    ABD (see `MaskedDiceLoss`).

    Shapes: `logits` (B, C, H, W), targets (B, H, W) long, `inside` (B, H, W) or (H, W) bool.
    Returns (dice, ce), two scalars in float32.

    Example:
        >>> loss = CopyPasteLoss()
        >>> logits = torch.randn(2, 4, 8, 8)
        >>> inside = torch.zeros(8, 8, dtype=torch.bool)
        >>> inside[2:6, 2:6] = True
        >>> dice, ce = loss(logits, torch.zeros(2, 8, 8, dtype=torch.long), torch.ones(2, 8, 8, dtype=torch.long),
        ...                 inside, outside_weight=0.5, inside_weight=1.0)
        >>> dice.shape, ce.shape
        (torch.Size([]), torch.Size([]))
    """

    def __init__(self, background_unmasked: bool = False):
        super().__init__()
        self.dice = MaskedDiceLoss(smooth=1e-10, background_unmasked=background_unmasked)

    def forward(self, logits: Tensor, outside_target: Tensor, inside_target: Tensor, inside: Tensor,
                outside_weight: float = 1.0, inside_weight: float = 1.0) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            inside = inside.expand(outside_target.shape).float()
            outside = 1.0 - inside
            probs = torch.softmax(logits, dim=1)
            dice = (outside_weight * self.dice(probs, outside_target, outside)
                    + inside_weight * self.dice(probs, inside_target, inside))
            log_probs = F.log_softmax(logits, dim=1)  # cross-entropy's, computed once for both targets
            ce_out = F.nll_loss(log_probs, outside_target.long(), reduction="none")
            ce_in = F.nll_loss(log_probs, inside_target.long(), reduction="none")
            ce = (outside_weight * (ce_out * outside).sum() / (outside.sum() + 1e-16)
                  + inside_weight * (ce_in * inside).sum() / (inside.sum() + 1e-16))
            return dice, ce
