"""The SSL4MIS 2D UNet (MONA_SPEC section 2), exposing the features MONA's losses need.

Channels 16-32-64-128-256, two (3x3 conv, BatchNorm, LeakyReLU) per block, encoder dropout
0.05-0.5, max-pool down, transposed-conv up, 3x3 output conv: about 1.8M parameters, so
results compare with SSL4MIS, BCP and MONA's own tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (16, 32, 64, 128, 256)
DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


class UNetOutput(NamedTuple):
    logits: torch.Tensor  # (B, C, H, W)
    bottleneck: torch.Tensor  # (B, 256, H/16, W/16)
    decoder: list[torch.Tensor]  # coarse to fine: 256@1/16, 128@1/8, 64@1/4, 32@1/2, 16@1/1


class CPUDropout(nn.Dropout):
    """`nn.Dropout` whose mask comes from `uniform_` on the CPU: the same law (each element kept
    with probability 1 - p, scaled by 1 / (1 - p)), but `bernoulli_`, which `nn.Dropout` draws with
    there, was ~10 % of a mean-teacher step on 2 AVX2 cores (docs/performance.md). CUDA keeps
    PyTorch's fused kernel. No state, so checkpoints are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.empty_like(x).uniform_() >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            CPUDropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """Transposed-conv upsampling, concatenation with the skip connection, ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(skip_channels * 2, out_channels, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 4):
        super().__init__()
        self.num_classes = num_classes
        c = CHANNELS
        self.encoder = nn.ModuleList([ConvBlock(in_channels, c[0], DROPOUT[0])])
        for i in range(1, 5):
            self.encoder.append(nn.Sequential(nn.MaxPool2d(2), ConvBlock(c[i - 1], c[i], DROPOUT[i])))
        self.decoder = nn.ModuleList([UpBlock(c[i], c[i - 1], c[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(c[0], num_classes, 3, padding=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder outputs, fine to coarse: 16@1/1, 32@1/2, 64@1/4, 128@1/8, 256@1/16."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def decode(self, features: list[torch.Tensor]) -> UNetOutput:
        """Logits, bottleneck and decoder features from the encoder outputs of `encode`."""
        skips = list(features)
        bottleneck = skips.pop()
        decoded = [bottleneck]
        x = bottleneck
        for block in self.decoder:
            x = block(x, skips.pop())
            decoded.append(x)
        return UNetOutput(self.head(x), bottleneck, decoded)

    def forward(self, x: torch.Tensor) -> UNetOutput:
        return self.decode(self.encode(x))

    def forward_feature_perturbation(self, x: torch.Tensor, p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """UniMatch's feature perturbation: clean and perturbed logits of `x` (B, 1, H, W), each (B, C, H, W).

        The encoder runs once; the decoder runs once on 2B inputs, every encoder output (skips
        included) followed by its copy under channel dropout `p` (`F.dropout2d`, always on,
        survivors scaled by 1 / (1 - p)), so the perturbation reaches the decoder only and both
        halves share the decoder's BatchNorm batch (Yang et al., CVPR 2023; LiheYoung/UniMatch@0324f3d
        `more-scenarios/medical/model/unet.py` L168-L173).
        """
        features = self.encode(x)
        logits = self.decode([torch.cat([f, F.dropout2d(f, p, training=True)]) for f in features]).logits
        clean, perturbed = logits.chunk(2)
        return clean, perturbed


@contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Forward passes inside normalise with batch statistics but leave the running ones untouched.

    Extra forwards of a loss on unusual inputs (MONA's L_eqv feeds warped slices with zero
    padding outside the image) would otherwise pull BatchNorm's running mean and variance,
    which evaluation uses and the EMA teacher copies, away from the statistics of real slices.
    Momentum 0 keeps `running = (1 - 0) * running`.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
