"""L_sup: cross-entropy + soft Dice on labeled slices (MONA_SPEC sections 3 and 4)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn


class SupervisedSegLoss(nn.Module):
    """Cross-entropy plus soft Dice, as the SSL4MIS baselines that MONA builds on use them.

    Reference: Luo, SSL4MIS (github.com/HiLab-git/SSL4MIS, `utils/losses.py: DiceLoss`);
    You et al., "Mine yOur owN Anatomy", TPAMI 2024 (arXiv 2209.13476).

    Computes `ce_weight * CE(logits, labels) + dice_weight * Dice(softmax(logits), onehot(labels))`
    with MONAI's `DiceCELoss`, configured to equal SSL4MIS's `DiceLoss(softmax=True)`:
    the Dice of each class is taken over the whole batch (`batch=True`), with squared
    sums in the denominator (`squared_pred=True`) and smoothing 1e-5 on both sides, then
    averaged over **all** classes, background included (`include_background=True`).
    SSL4MIS's training scripts weight the pair 0.5/0.5; the MONA spec adds them (1/1).
    Softmax, CE and Dice run in float32 even under bf16 autocast.

    Shapes: `logits` (B, C, H, W) float, `labels` (B, H, W) long in [0, C). Returns a scalar.

    Example:
        >>> loss_fn = SupervisedSegLoss()
        >>> logits = torch.randn(2, 4, 8, 8, requires_grad=True)
        >>> labels = torch.randint(0, 4, (2, 8, 8))
        >>> loss = loss_fn(logits, labels)
        >>> loss.backward()
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.dice_ce = DiceCELoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
            lambda_ce=ce_weight,
            lambda_dice=dice_weight,
        )

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"expected logits (B, C, H, W) and labels (B, H, W), got {tuple(logits.shape)} and "
                             f"{tuple(labels.shape)}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.dice_ce(logits.float(), labels.unsqueeze(1).long())
