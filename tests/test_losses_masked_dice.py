"""MaskedDiceLoss against slow references: UniMatch's Dice that drops ignored pixels, and BCP's
masked Dice, before (background unmasked) and after its fix."""

import pytest
import torch

from mona.losses.masked_dice import MaskedDiceLoss


def reference_dropping_pixels(probs, target, keep, smooth):
    """UniMatch's reading: per class, the sums run over the kept pixels only (boolean selection)."""
    total = 0.0
    for c in range(probs.shape[1]):
        p, t = probs[:, c][keep], (target == c).float()[keep]
        total += 1 - (2 * (p * t).sum() + smooth) / ((p * p).sum() + (t * t).sum() + smooth)
    return total / probs.shape[1]


def reference_bcp(probs, target, mask, smooth, background_unmasked):
    """BCP's reading: per class, every sum weighted by that class's channel of the one-hot mask."""
    total = 0.0
    for c in range(probs.shape[1]):
        m = torch.ones_like(mask) if (background_unmasked and c == 0) else mask
        p, t = probs[:, c], (target == c).float()
        total += 1 - (2 * (p * t * m).sum() + smooth) / ((p * p * m).sum() + (t * t * m).sum() + smooth)
    return total / probs.shape[1]


def batch(seed, n=3, classes=4, size=9):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, classes, size, size, generator=generator) * 3, dim=1)
    target = torch.randint(0, classes, (n, size, size), generator=generator)
    mask = torch.rand(n, size, size, generator=generator) > 0.4
    return probs, target, mask


@pytest.mark.parametrize("seed,n,classes", [(0, 3, 4), (1, 1, 4), (2, 2, 2), (3, 4, 5)])
def test_dropping_ignored_pixels_equals_a_zero_weight(seed, n, classes):
    probs, target, mask = batch(seed, n, classes)
    ours = MaskedDiceLoss(smooth=1e-5)(probs, target, mask)
    assert torch.allclose(ours, reference_dropping_pixels(probs, target, mask, 1e-5), atol=1e-6)
    everything = torch.ones_like(mask)
    assert torch.allclose(MaskedDiceLoss(smooth=1e-5)(probs, target),
                          reference_dropping_pixels(probs, target, everything, 1e-5), atol=1e-6)


@pytest.mark.parametrize("background_unmasked", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_dice_equals_bcp_per_class_masking(seed, background_unmasked):
    probs, target, mask = batch(seed)
    ours = MaskedDiceLoss(smooth=1e-10, background_unmasked=background_unmasked)(probs, target, mask)
    reference = reference_bcp(probs, target, mask.float(), 1e-10, background_unmasked)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_an_absent_class_and_an_empty_mask():
    probs, target, mask = batch(4)
    target[target == 2] = 1  # class 2 absent from the target: its Dice is 1 - smooth / (sum p^2 + smooth)
    assert torch.allclose(MaskedDiceLoss()(probs, target, mask), reference_dropping_pixels(probs, target, mask, 1e-5),
                          atol=1e-6)
    assert MaskedDiceLoss()(probs, target, torch.zeros_like(mask)) == 0  # every pixel ignored: UniMatch's 0 loss
    with pytest.raises(ValueError, match="expected probs"):
        MaskedDiceLoss()(probs, target[0])
