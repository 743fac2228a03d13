"""Rectangular boxes for copy-paste, CutMix and cutout, and pasting through them.

Three peers of MONA mix images through boxes, each with its own law:
- BCP (Bai et al., CVPR 2023) pastes one box of 2/3 of the side, placed uniformly, shared by the
  whole batch and both directions (`copy_paste_box`; DeepMed-Lab-ECNU/BCP@7879f98
  `code/ACDC_BCP_train.py` L131-L140, `generate_mask`).
- UniMatch's CutMix (Yang et al., CVPR 2023) and ABD's cutout (Chi et al., CVPR 2024) draw, per
  sample and with probability p, a box of area U(0.02, 0.4) of the image and aspect ratio
  U(0.3, 1/0.3), at a uniform top-left corner, redrawn until it fits (`random_boxes`;
  LiheYoung/UniMatch@0324f3d `more-scenarios/medical/dataset/transform.py` L32-L50, which draws the
  area once; chy-upc/ABD@4efd525 `code/dataloaders/dataset.py` L110-L136, which redraws it each try).

Masks are bool, True inside the box. Every draw comes from the step's CPU generator; the loop
that redraws a box that does not fit runs on the host over a handful of scalars, before
anything reaches the device.
"""

from __future__ import annotations

import math

import torch

from mona.randomness import host_to_device


def _box_mask(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> torch.Tensor:
    rows = torch.arange(height)
    cols = torch.arange(width)
    return ((rows >= top) & (rows < top + box_h))[:, None] & ((cols >= left) & (cols < left + box_w))[None, :]


def copy_paste_box(size: tuple[int, int], generator: torch.Generator, fraction: float = 2 / 3,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """BCP's box (H, W): sides int(fraction * H) x int(fraction * W), its top-left corner uniform in
    [0, H - box_h) x [0, W - box_w) (numpy's `randint(0, H - box_h)`, whose upper bound is excluded)."""
    height, width = size
    box_h, box_w = int(height * fraction), int(width * fraction)
    top = int(torch.randint(0, max(height - box_h, 1), (1,), generator=generator))
    left = int(torch.randint(0, max(width - box_w, 1), (1,), generator=generator))
    return host_to_device(_box_mask(height, width, top, left, box_h, box_w), device)


def _draw(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_boxes(batch: int, size: tuple[int, int], generator: torch.Generator, p: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3),
                 redraw_area: bool = False, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, H, W) masks: each sample gets, with probability `p`, a box of area U(*area) x H x W and
    aspect ratio r ~ U(*ratio) (width int(sqrt(area / r)), height int(sqrt(area * r))) whose top-left
    corner is uniform over the image, redrawn until the box fits; otherwise an empty mask.
    `redraw_area` draws the area again at each try (ABD's cutout) instead of once (UniMatch's CutMix).
    """
    height, width = size
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    for index in range(batch):
        if float(torch.rand((), generator=generator)) >= p:
            continue
        box_area = _draw(generator, *area) * height * width
        while True:
            aspect = _draw(generator, *ratio)
            box_w, box_h = int(math.sqrt(box_area / aspect)), int(math.sqrt(box_area * aspect))
            left = int(torch.randint(0, width, (1,), generator=generator))
            top = int(torch.randint(0, height, (1,), generator=generator))
            if left + box_w <= width and top + box_h <= height:
                break
            if redraw_area:
                box_area = _draw(generator, *area) * height * width
        masks[index] = _box_mask(height, width, top, left, box_h, box_w)
    return host_to_device(masks, device)


def paste(background: torch.Tensor, source: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """`source` inside `box`, `background` outside. Images (B, C, H, W) or label maps (B, H, W);
    `box` (H, W) for one box shared by the batch, or (B, H, W)."""
    if background.dim() == 4:
        box = box.unsqueeze(-3)  # (H, W) -> (1, H, W), (B, H, W) -> (B, 1, H, W)
    return torch.where(box, source, background)
