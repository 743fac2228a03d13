"""Projection heads of MONA's two stages (MONA_SPEC sections 3 and 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionMLP(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Linear: the global projector (256->256->512) and predictor (512->512->512)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class LocalHead(nn.Sequential):
    """1x1 convs C -> 2C -> C over an 8x8-pooled patch of the output; flattened, one embedding per patch."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, 2 * channels, 1), nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True),
            nn.Conv2d(2 * channels, channels, 1),
        )


class RepresentationHead(nn.Module):
    """FPN-like pixel embeddings: every decoder level resized to one resolution and
    concatenated (256+128+64+32+16 = 496 channels), then two 1x1 convs to `embed_dim`.

    `stride` 1 is the spec's full resolution; stride 2 or 4 computes the embeddings on a
    coarser grid (finer levels average-pooled), 4x or 16x cheaper: the 496-channel 1x1
    conv at full resolution dominates a CPU step.
    """

    def __init__(self, embed_dim: int = 128, in_channels: int = 496, hidden: int = 256, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, embed_dim, 1),
        )

    def forward(self, decoder: list[torch.Tensor]) -> torch.Tensor:
        size = tuple(s // self.stride for s in decoder[-1].shape[-2:])
        levels = [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) if f.shape[-1] < size[-1]
            else F.adaptive_avg_pool2d(f, size) if f.shape[-1] > size[-1] else f
            for f in decoder
        ]
        return self.project(torch.cat(levels, dim=1))
