"""L_eqv (consistency): warp-equivariance of the student's prediction (MONA_SPEC section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EquivarianceLoss(nn.Module):
    """Per-pixel KL(target || prediction) averaged over the masked pixels.

    Reference: You et al., "Mine yOur owN Anatomy", TPAMI 2024 (arXiv 2209.13476), the
    consistency principle: a warp W applied before or after the network should agree.

    `target` is W(softmax(student(view 1))), probabilities; it is detached here, so the
    gradient reaches the student only through `prediction` = student(W(view 2)), logits.
    Per pixel: `sum_c t_c (log t_c - log_softmax(prediction)_c)` (0 log 0 = 0), averaged
    over the pixels where `mask` is true (foreground label or pseudo-label with confidence
    >= 0.7 in MONA); zero, still part of the graph, when the mask is empty. Float32 even
    under bf16 autocast.

    With `classes` (a label per pixel) the mean is class-balanced: the mean over the classes
    present in the mask of each class's mean over its masked pixels, so that background
    (~95 % of a cardiac slice) weighs as much as each structure (`mona.eqv_pixels=balanced`).

    Shapes: `target` (B, C, H, W) probabilities, `prediction` (B, C, H, W) logits,
    `mask` (B, H, W) bool, `classes` (B, H, W) long or None. Returns a scalar.

    Example:
        >>> loss_fn = EquivarianceLoss()
        >>> target = torch.softmax(torch.randn(2, 4, 8, 8), dim=1)
        >>> prediction = torch.randn(2, 4, 8, 8, requires_grad=True)
        >>> loss = loss_fn(target, prediction, torch.ones(2, 8, 8, dtype=torch.bool))
        >>> loss.backward()
        >>> bool(loss > 0)
        True
    """

    def forward(self, target: Tensor, prediction: Tensor, mask: Tensor, classes: Tensor | None = None) -> Tensor:
        pixels = (target.shape[0], *target.shape[2:])
        if (target.shape != prediction.shape or target.dim() != 4 or mask.shape != pixels
                or (classes is not None and classes.shape != pixels)):
            raise ValueError(
                f"expected target and prediction (B, C, H, W), mask and classes (B, H, W), got "
                f"{tuple(target.shape)}, {tuple(prediction.shape)}, {tuple(mask.shape)}, "
                f"{None if classes is None else tuple(classes.shape)}"
            )
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            t = target.detach().float()
            log_p = F.log_softmax(prediction.float(), dim=1)
            kl = (torch.special.xlogy(t, t) - t * log_p).sum(dim=1)  # (B, H, W)
            weight = mask.to(kl.dtype)
            if classes is None:
                return (kl * weight).sum() / weight.sum().clamp(min=1.0)
            members = F.one_hot(classes.long(), target.shape[1]).to(kl.dtype) * weight.unsqueeze(-1)  # (B, H, W, C)
            counts = members.sum((0, 1, 2))
            per_class = (kl.unsqueeze(-1) * members).sum((0, 1, 2)) / counts.clamp(min=1.0)
            present = (counts > 0).to(kl.dtype)
            return (per_class * present).sum() / present.sum().clamp(min=1.0)
