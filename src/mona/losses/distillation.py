"""Stage-1 relational pre-training: ISD similarity distillation (MONA_SPEC section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SimilarityDistillationLoss(nn.Module):
    """KL divergence between teacher and student similarity distributions over a queue.

    Reference: Tejankar et al., "ISD: Self-Supervised Learning by Iterative Similarity
    Distillation", ICCV 2021; used by MONA (You et al., TPAMI 2024) for both the global
    branch (pooled bottleneck) and the local branch (one embedding per patch, see
    `extract_patches`).

    With all vectors L2-normalised, the student's logits are `cos(z_s, anchors) / tau_s`
    and the teacher's `cos(z_t, anchors) / tau_t`; the loss is
    `KL(softmax(teacher) || softmax(student))`, summed over anchors and averaged over the
    N rows. The teacher embeddings and the anchors are detached; the anchors are the
    queue of past teacher embeddings (`FeatureQueue.items()`), read before this step's
    teacher embeddings are pushed. Computed in float32 even under bf16 autocast. An empty
    queue gives a zero that is still part of the student's graph.

    Shapes: `student` (N, D), `teacher` (N, D), `anchors` (K, D). Returns a scalar.

    Example:
        >>> loss_fn = SimilarityDistillationLoss(tau_student=0.1, tau_teacher=0.01)
        >>> z_s = torch.randn(6, 16, requires_grad=True)
        >>> loss = loss_fn(z_s, torch.randn(6, 16), torch.randn(36, 16))
        >>> loss.backward()
        >>> bool(loss >= 0)
        True
    """

    def __init__(self, tau_student: float = 0.1, tau_teacher: float = 0.01):
        super().__init__()
        self.tau_student = tau_student
        self.tau_teacher = tau_teacher

    def forward(self, student: Tensor, teacher: Tensor, anchors: Tensor) -> Tensor:
        if (student.dim() != 2 or teacher.shape != student.shape or anchors.dim() != 2
                or anchors.shape[1] != student.shape[1]):
            raise ValueError(
                f"expected student (N, D), teacher (N, D), anchors (K, D), got "
                f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(anchors.shape)}"
            )
        if anchors.shape[0] == 0:
            return student.sum() * 0.0
        with torch.autocast(device_type=student.device.type, enabled=False):
            anchors = F.normalize(anchors.detach().float(), dim=1)
            z_s = F.normalize(student.float(), dim=1)
            z_t = F.normalize(teacher.detach().float(), dim=1)
            log_p_s = F.log_softmax(z_s @ anchors.T / self.tau_student, dim=1)
            log_p_t = F.log_softmax(z_t @ anchors.T / self.tau_teacher, dim=1)
            return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)

    def extra_repr(self) -> str:
        return f"tau_student={self.tau_student}, tau_teacher={self.tau_teacher}"


def extract_patches(feature_map: Tensor, patch: int = 64, stride: int = 32, pooled: int = 8) -> Tensor:
    """Cut `feature_map` (B, C, H, W) into patch x patch windows and average-pool each to pooled x pooled.

    Returns (B * P, C, pooled, pooled), P = ((H - patch) // stride + 1) * ((W - patch) // stride + 1),
    row b * P + i * n_cols + j holding window (i, j) of image b. MONA's local branch maps
    each of these to ONE embedding (a 1x1-conv head then pooling); the authors' code instead
    reshapes patch features into 49-value fragments (MONA_SPEC section 6, defect 5).

    Example:
        >>> extract_patches(torch.randn(2, 4, 256, 256)).shape
        torch.Size([98, 4, 8, 8])
    """
    if feature_map.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got {tuple(feature_map.shape)}")
    b, c, h, w = feature_map.shape
    if h < patch or w < patch:
        raise ValueError(f"feature map {h}x{w} is smaller than the {patch}x{patch} patch")
    windows = F.unfold(feature_map, kernel_size=patch, stride=stride)  # (B, C*patch*patch, P)
    p = windows.shape[-1]
    windows = windows.view(b, c, patch, patch, p).permute(0, 4, 1, 2, 3).reshape(b * p, c, patch, patch)
    return F.adaptive_avg_pool2d(windows, pooled)
