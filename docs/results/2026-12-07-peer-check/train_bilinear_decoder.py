"""`mona train` with the three peers' decoder: each UpBlock a 1x1 convolution and bilinear x2 upsampling
(align_corners=True) instead of mona's 2x2 transposed convolution (PEERS_SPEC 0.4; docs/methods/peers.md,
"mona's UNet for every method"). A diagnostic for the UniMatch peer check, val only:

  python train_bilinear_decoder.py train --data ../shared/data/ACDC --method unimatch --labeled 3 \
      --config cpu-small --seed 0 --out .dev/unet/unimatch_l3_s0_bilinear --no-progress
"""
import sys

import torch
import torch.nn.functional as F
from torch import nn

import mona.models.unet as unet
from mona.cli.main import main


class BilinearUpBlock(nn.Module):
    """SSL4MIS's / UniMatch's UpBlock as their code builds it (bilinear=True, the default it never overrides)."""

    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.conv = unet.ConvBlock(skip_channels * 2, out_channels, dropout=0.0)

    def forward(self, x, skip):
        x = F.interpolate(self.conv1x1(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1))


unet.UpBlock = BilinearUpBlock
sys.exit(main(sys.argv[1:]))
