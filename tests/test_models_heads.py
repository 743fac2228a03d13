"""MONA's heads have the spec's shapes (MONA_SPEC sections 3 and 4) on the UNet's real features."""

from __future__ import annotations

import pytest
import torch

from mona.losses import extract_patches
from mona.models.heads import LocalHead, ProjectionMLP, RepresentationHead
from mona.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(0)
    with torch.no_grad():
        return UNet(1, 4).eval()(torch.rand(2, 1, 64, 64))


def test_global_projector_and_predictor(features):
    projector, predictor = ProjectionMLP(256, 256, 512), ProjectionMLP(512, 512, 512)
    pooled = features.bottleneck.mean((2, 3))
    assert pooled.shape == (2, 256)
    assert predictor(projector(pooled)).shape == (2, 512)
    assert [m.out_features for m in projector if isinstance(m, torch.nn.Linear)] == [256, 512]


def test_local_head_maps_each_patch_to_one_embedding(features):
    patches = extract_patches(features.logits, 32, 16)  # 3 x 3 patches per 64-px image
    assert patches.shape == (2 * 9, 4, 8, 8)
    head = LocalHead(4)
    assert [m.out_channels for m in head if isinstance(m, torch.nn.Conv2d)] == [8, 4]  # C -> 2C -> C
    assert head(patches).flatten(1).shape == (18, 4 * 8 * 8)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_representation_head_fuses_every_decoder_level(features, stride):
    assert [f.shape[1] for f in features.decoder] == [256, 128, 64, 32, 16]  # 496 channels in all
    head = RepresentationHead(128, stride=stride)
    assert head.project[0].in_channels == 496
    assert head(features.decoder).shape == (2, 128, 64 // stride, 64 // stride)


def test_representation_head_sees_every_level():
    torch.manual_seed(0)
    head = RepresentationHead(8, stride=2).eval()
    levels = [torch.rand(1, c, 32 // 2**i, 32 // 2**i) for i, c in zip(range(4, -1, -1), (256, 128, 64, 32, 16))]
    base = head(levels)
    for i in range(5):  # changing any one level changes the embedding
        changed = [level + (1.0 if j == i else 0.0) for j, level in enumerate(levels)]
        assert not torch.allclose(head(changed), base)
