"""ABD's adaptive bidirectional displacement between two views of a batch (the BCP variant, ABD-R).

Chi et al., "Adaptive Bidirectional Displacement for Semi-Supervised Medical Image Segmentation",
CVPR 2024 (arXiv 2405.00378); `ABD_R_BCP` in chy-upc/ABD@4efd525 `code/utils/displacement.py`
L49-L104. Written batched here (the official code loops over the images in Python); the test
compares it with a loop that follows the official one step by step.

Each image is cut into a `grid` x `grid` array of patches, numbered row by row. A patch's
confidence is the mean max-softmax over its pixels, its class profile the mean of the logits.
Per image, with probability `adaptive_probability` (else the plain branch):
- adaptive: b, d = the least confident patches of views 1 and 2; among the `top_k` most confident
  patches of view 1, a = the one whose profile is closest (KL(softmax(profile_2[d]) ||
  softmax(profile_1[.]))) to view 2's weakest, and among view 2's, c = the one closest to view 1's
  weakest;
- plain: a, c = the most confident patches of views 1 and 2, b, d the least confident.
Then view 1's patch b becomes view 2's patch c, and afterwards view 2's patch d becomes view 1's
patch a (read after that first write, as the official code reads it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_patches(image: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, H, W) -> (B, grid * grid, H * W / grid^2), patches numbered row by row (einops
    'b (h p1) (w p2) -> b (h w) (p1 p2)')."""
    batch, height, width = image.shape
    return (image.reshape(batch, grid, height // grid, grid, width // grid).permute(0, 1, 3, 2, 4)
            .reshape(batch, grid * grid, -1))


def from_patches(patches: torch.Tensor, grid: int, size: tuple[int, int]) -> torch.Tensor:
    """The inverse of `to_patches`: (B, grid * grid, P) -> (B, H, W)."""
    batch = patches.shape[0]
    height, width = size
    return (patches.reshape(batch, grid, grid, height // grid, width // grid).permute(0, 1, 3, 2, 4)
            .reshape(batch, height, width))


def _profiles(logits: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, grid * grid, C) mean logits per patch."""
    batch, classes, height, width = logits.shape
    means = logits.float().reshape(batch, classes, grid, height // grid, grid, width // grid).mean((3, 5))
    return means.reshape(batch, classes, grid * grid).transpose(1, 2)


def _closest(profiles: torch.Tensor, candidates: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Per image, the candidate patch (index into the grid) whose softmax profile is closest to
    the anchor's: argmin_j KL(softmax(anchor) || softmax(profiles[candidates_j]))."""
    candidate_profiles = torch.gather(profiles, 1, candidates[..., None].expand(-1, -1, profiles.shape[-1]))
    kl = F.kl_div(torch.log_softmax(candidate_profiles, -1), torch.softmax(anchor, -1)[:, None],
                  reduction="none").sum(-1)
    return torch.gather(candidates, 1, kl.argmin(1, keepdim=True))[:, 0]


def adaptive_bidirectional_displacement(
    images_1: torch.Tensor, images_2: torch.Tensor, confidence_1: torch.Tensor, confidence_2: torch.Tensor,
    logits_1: torch.Tensor, logits_2: torch.Tensor, adaptive: torch.Tensor, grid: int = 4, top_k: int = 4,
) -> torch.Tensor:
    """The displaced images (2B, 1, H, W): view 1's then view 2's.

    `images_*` (B, 1, H, W), `confidence_*` (B, H, W) max softmax, `logits_*` (B, C, H, W), all
    detached; `adaptive` (B,) bool: which images take the KL branch. H and W divisible by `grid`.
    """
    size = tuple(images_1.shape[-2:])
    patches_1, patches_2 = to_patches(images_1[:, 0], grid), to_patches(images_2[:, 0], grid)
    score_1, score_2 = to_patches(confidence_1, grid).mean(-1), to_patches(confidence_2, grid).mean(-1)
    profiles_1, profiles_2 = _profiles(logits_1, grid), _profiles(logits_2, grid)
    rows = torch.arange(images_1.shape[0], device=images_1.device)
    weakest_1, weakest_2 = score_1.argmin(1), score_2.argmin(1)
    top_1, top_2 = score_1.topk(top_k, dim=1).indices, score_2.topk(top_k, dim=1).indices
    source_1 = torch.where(adaptive, _closest(profiles_2, top_2, profiles_1[rows, weakest_1]), score_2.argmax(1))
    source_2 = torch.where(adaptive, _closest(profiles_1, top_1, profiles_2[rows, weakest_2]), score_1.argmax(1))
    displaced_1 = patches_1.clone()
    displaced_1[rows, weakest_1] = patches_2[rows, source_1]
    displaced_2 = patches_2.clone()
    displaced_2[rows, weakest_2] = displaced_1[rows, source_2]
    return from_patches(torch.cat([displaced_1, displaced_2]), grid, size)[:, None]
