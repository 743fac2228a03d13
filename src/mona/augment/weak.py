"""Weak augmentation on batched tensors (MONA_SPEC section 4), on the training device.

Per sample: with p 0.5 a random rot90 + flip, else with p 0.5 a rotation in [-20, 20)
degrees, else nothing. All three are one affine map per sample, so a batch is warped by a
single `grid_sample`: images bilinearly, labels with nearest, out-of-image pixels 0.
Random numbers come from a CPU generator (reproducible on any device); no PIL round-trips.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mona.randomness import host_to_device


def random_weak_affine(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2, 3) affine matrices in normalised coordinates for `F.affine_grid`."""
    use_rot90 = torch.rand(batch, generator=generator) < 0.5
    use_rotate = (torch.rand(batch, generator=generator) < 0.5) & ~use_rot90
    quarter_turns = torch.randint(0, 4, (batch,), generator=generator)
    flip_axis = torch.randint(0, 2, (batch,), generator=generator)
    small_angle = (torch.rand(batch, generator=generator) * 40.0 - 20.0) * math.pi / 180.0
    angle = torch.where(use_rot90, quarter_turns * (math.pi / 2), torch.where(use_rotate, small_angle, 0.0))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Snap exact quarter turns so rot90 is a pure permutation of pixels.
    cos = torch.where(use_rot90, cos.round(), cos)
    sin = torch.where(use_rot90, sin.round(), sin)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    flip = torch.ones(batch, 2)
    flip[torch.arange(batch), flip_axis] = -1.0
    flip = torch.where(use_rot90[:, None], flip, torch.ones_like(flip))
    linear = rotation * flip[:, None, :]
    return torch.cat([linear, torch.zeros(batch, 2, 1)], dim=2)


def draw_weak_affine(batch: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """`random_weak_affine` on `device`: the maps a method's `prepare` draws for `warp_views` or `warp_affine`."""
    return host_to_device(random_weak_affine(batch, generator), device)


def warp_affine(
    theta: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp images (B,C,H,W) bilinearly and labels (B,H,W) with nearest by the same affine maps."""
    theta = host_to_device(theta.to(torch.float32), image.device)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if label is None:
        return warped.to(image.dtype), None
    warped_label = F.grid_sample(label[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)
    return warped.to(image.dtype), warped_label[:, 0].round().long()


def weak_augment(
    image: torch.Tensor, label: torch.Tensor | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply random rot90+flip / small rotation to a batch, moving image and label together."""
    return warp_affine(random_weak_affine(image.shape[0], generator), image, label)


def weak_views(
    labeled: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weakly augmented labeled images, their labels, and unlabeled images, in one batched warp."""
    theta = random_weak_affine(labeled["image"].shape[0] + unlabeled["image"].shape[0], generator)
    return warp_views(theta, labeled, unlabeled)


def warp_views(
    theta: torch.Tensor, labeled: dict[str, torch.Tensor], unlabeled: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`weak_views` with its affine maps drawn beforehand (labeled images first, then unlabeled)."""
    n_labeled = labeled["image"].shape[0]
    unknown = labeled["label"].new_zeros((unlabeled["image"].shape[0], *labeled["label"].shape[1:]))
    images, labels = warp_affine(
        theta, torch.cat([labeled["image"], unlabeled["image"]]), torch.cat([labeled["label"], unknown])
    )
    return images[:n_labeled], labels[:n_labeled], images[n_labeled:]


def resize_images(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B,C,H,W) images or class probabilities with linear interpolation."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def resize_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B,H,W) label maps with nearest neighbour (labels are never interpolated)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=size, mode="nearest-exact")[:, 0].round().to(label.dtype)
