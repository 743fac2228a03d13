"""L_sup: cross-entropy + soft Dice on labeled slices (MONA_SPEC sections 3 and 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SupervisedSegLoss(nn.Module):
    """Cross-entropy plus soft Dice, as the SSL4MIS baselines that MONA builds on use them.

    Reference: Luo, SSL4MIS (github.com/HiLab-git/SSL4MIS, `utils/losses.py: DiceLoss`);
    You et al., "Mine yOur owN Anatomy", TPAMI 2024 (arXiv 2209.13476).

    Computes `ce_weight * CE(logits, labels) + dice_weight * Dice(softmax(logits), onehot(labels))`
    as MONAI's `DiceCELoss` computes it, configured to equal SSL4MIS's `DiceLoss(softmax=True)`:
    the Dice of each class is taken over the whole batch (`batch=True`), with squared
    sums in the denominator (`squared_pred=True`) and smoothing 1e-5 on both sides, then
    averaged over **all** classes, background included (`include_background=True`).
    SSL4MIS's training scripts weight the pair 0.5/0.5; the MONA spec adds them (1/1).
    Softmax, CE and Dice run in float32 even under bf16 autocast.

    Written out rather than called: MONAI's `DiceLoss` reads its reduction axes through a
    host read (`torch.arange(...).tolist()`), which ends a compiled graph three times a step
    (issue #48). The operations are MONAI's own, in its order, so the values and gradients are
    bit-identical to `DiceCELoss` (tests/test_losses.py checks them against it).

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

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5):
        super().__init__()
        self.ce_weight, self.dice_weight, self.smooth = ce_weight, dice_weight, smooth

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"expected logits (B, C, H, W) and labels (B, H, W), got {tuple(logits.shape)} and "
                             f"{tuple(labels.shape)}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, labels = logits.float(), labels.long()
            return self.dice_weight * self._dice(logits, labels) + self.ce_weight * F.cross_entropy(logits, labels)

    def _dice(self, logits: Tensor, labels: Tensor) -> Tensor:
        """1 - mean over classes of (2 tp + s) / (2 tp + fp + fn + s), with tp, fp, fn from squared
        norms over batch and pixels (MONAI's `compute_tp_fp_fn` with ord 2)."""
        probs = torch.softmax(logits, 1)
        onehot = torch.zeros_like(probs).scatter_(1, labels.unsqueeze(1), 1)
        axes = [0, 2, 3]
        pred_o = torch.pow(torch.linalg.vector_norm(probs, ord=2, dim=axes), exponent=2)
        ground_o = torch.pow(torch.linalg.vector_norm(onehot, ord=2, dim=axes), exponent=2)
        difference = torch.pow(torch.linalg.vector_norm(probs - onehot, ord=2, dim=axes), exponent=2)
        tp = (pred_o + ground_o - difference) / 2
        fp, fn = (pred_o - tp) * 0.5, (ground_o - tp) * 0.5
        return torch.mean(1 - (2 * tp + self.smooth) / (2 * (tp + fp + fn) + self.smooth))
