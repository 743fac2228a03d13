"""CopyPasteLoss against a slow, literal reading of BCP's `mix_loss` (and ABD's, background unmasked)."""

import pytest
import torch
import torch.nn.functional as F

from mona.losses.copy_paste import CopyPasteLoss


def reference_mix_loss(logits, image_target, patch_target, outside, image_weight, patch_weight, background_unmasked):
    """BCP's `mix_loss(output, img_l, patch_l, mask)`: `mask` is 1 outside the box, the image target
    scores there and the patch target inside; per-class Dice over the batch with smooth 1e-10."""
    probs = torch.softmax(logits, dim=1)

    def dice(target, region):
        total = 0.0
        for c in range(probs.shape[1]):
            m = torch.ones_like(region) if (background_unmasked and c == 0) else region
            p, t = probs[:, c], (target == c).float()
            total += 1 - (2 * (p * t * m).sum() + 1e-10) / ((p * p * m).sum() + (t * t * m).sum() + 1e-10)
        return total / probs.shape[1]

    inside = 1 - outside
    loss_dice = dice(image_target, outside) * image_weight + dice(patch_target, inside) * patch_weight
    ce_image = F.cross_entropy(logits, image_target, reduction="none")
    ce_patch = F.cross_entropy(logits, patch_target, reduction="none")
    loss_ce = (image_weight * (ce_image * outside).sum() / (outside.sum() + 1e-16)
               + patch_weight * (ce_patch * inside).sum() / (inside.sum() + 1e-16))
    return loss_dice, loss_ce


@pytest.mark.parametrize("background_unmasked", [False, True])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5)])
def test_copy_paste_loss_equals_bcp_mix_loss(weights, background_unmasked):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 12, 12, generator=generator) * 2
    outside_target = torch.randint(0, 4, (2, 12, 12), generator=generator)
    inside_target = torch.randint(0, 4, (2, 12, 12), generator=generator)
    box = torch.zeros(12, 12, dtype=torch.bool)
    box[2:10, 3:11] = True
    dice, ce = CopyPasteLoss(background_unmasked)(logits, outside_target, inside_target, box, *weights)
    ref_dice, ref_ce = reference_mix_loss(logits, outside_target, inside_target, (~box).float().expand(2, 12, 12),
                                          *weights, background_unmasked)
    assert torch.allclose(dice, ref_dice, atol=1e-6) and torch.allclose(ce, ref_ce, atol=1e-6)


def test_each_region_reads_only_its_own_target():
    """Changing the inside target outside the box, or the outside one inside it, changes nothing."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    outside_target, inside_target = (torch.randint(0, 4, (2, 8, 8), generator=generator) for _ in range(2))
    box = torch.zeros(8, 8, dtype=torch.bool)
    box[1:6, 2:7] = True
    loss = CopyPasteLoss()
    before = loss(logits, outside_target, inside_target, box, 0.5, 1.0)
    scrambled_out = torch.where(box, (outside_target + 1) % 4, outside_target)
    scrambled_in = torch.where(box, inside_target, (inside_target + 2) % 4)
    after = loss(logits, scrambled_out, scrambled_in, box, 0.5, 1.0)
    assert all(torch.allclose(a, b) for a, b in zip(before, after))
    changed = loss(logits, outside_target, torch.where(box, (inside_target + 1) % 4, inside_target), box, 0.5, 1.0)
    assert not torch.allclose(before[1], changed[1])
