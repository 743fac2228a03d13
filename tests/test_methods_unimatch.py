"""UniMatch's wiring with exact oracles: the eval-mode pass on the mix batch, the CutMix of images and
targets, which pass and view each loss reads, and the total recomputed from its parts."""

import pytest
import torch

from mona.config import UniMatchConfig, load_config
from mona.losses.masked_dice import MaskedDiceLoss
from mona.losses.supervised import SupervisedSegLoss
from mona.methods import method_stages
from mona.methods import unimatch as unimatch_module
from mona.methods.unimatch import UniMatch, quantise, unimatch_strong_view

SIZE = 16


@pytest.fixture
def fixed_views(monkeypatch, without_weak_augmentation):
    """No weak augmentation, a strong view 1 - x, and two known box sets."""
    without_weak_augmentation(unimatch_module)
    monkeypatch.setattr(unimatch_module, "apply_unimatch_strong", lambda image, draws: 1 - image)
    boxes = [torch.zeros(2, SIZE, SIZE, dtype=torch.bool) for _ in range(2)]
    boxes[0][0, 2:9, 3:12] = True
    boxes[1][1, 5:15, 0:6] = True
    queue = list(boxes)
    monkeypatch.setattr(unimatch_module, "random_boxes", lambda *args, **kwargs: queue.pop(0))
    return boxes


def test_unimatch_wiring(fixed_views, stub_net):
    box_1, box_2 = fixed_views
    config = UniMatchConfig(confidence_threshold=0.6)
    method = UniMatch(4, config)
    method.model = stub_net(0)
    generator = torch.Generator().manual_seed(0)
    labeled = {"image": torch.rand(2, 1, SIZE, SIZE, generator=generator),
               "label": torch.randint(0, 4, (2, SIZE, SIZE), generator=generator)}
    unlabeled = {"image": torch.rand(4, 1, SIZE, SIZE, generator=generator)}  # unlabeled 2 + mix 2
    method.train()
    losses = method.step(labeled, unlabeled, 0.0, generator)
    weak_u, weak_mix = quantise(unlabeled["image"]).chunk(2)

    mix_call, fp_call, strong_call = method.model.calls
    assert torch.equal(mix_call[0], weak_mix) and mix_call[1] is False  # eval mode, the mix batch's weak view
    assert fp_call[2] == "fp" and fp_call[1] is True and torch.equal(fp_call[0], torch.cat([labeled["image"], weak_u]))
    strong_1 = torch.where(box_1[:, None], 1 - weak_mix, 1 - weak_u)
    strong_2 = torch.where(box_2[:, None], 1 - weak_mix, 1 - weak_u)
    assert strong_call[1] is True and torch.equal(strong_call[0], torch.cat([strong_1, strong_2]))
    assert method.model.training

    logits = method.model.logits
    mix_confidence, mix_pseudo = torch.softmax(logits(weak_mix), 1).max(1)
    clean, perturbed = method.model.forward_feature_perturbation(torch.cat([labeled["image"], weak_u]))
    confidence, pseudo = torch.softmax(clean[2:], 1).max(1)  # the clean weak pass, not a strong one
    dice = MaskedDiceLoss(smooth=1e-5)
    sup = SupervisedSegLoss(0.5, 0.5)(clean[:2], labeled["label"])
    s1_logits, s2_logits = logits(torch.cat([strong_1, strong_2])).chunk(2)
    s1 = dice(torch.softmax(s1_logits, 1), torch.where(box_1, mix_pseudo, pseudo),
              torch.where(box_1, mix_confidence, confidence) >= 0.6)
    s2 = dice(torch.softmax(s2_logits, 1), torch.where(box_2, mix_pseudo, pseudo),
              torch.where(box_2, mix_confidence, confidence) >= 0.6)
    fp = dice(torch.softmax(perturbed[2:], 1), pseudo, confidence >= 0.6)
    assert 0.2 < (confidence >= 0.6).float().mean() < 0.95  # the threshold matters in this oracle
    assert torch.allclose(losses["sup"], sup) and torch.allclose(losses["fp"], fp)
    assert torch.allclose(losses["strong"], (s1 + s2) / 2)
    assert torch.allclose(losses["loss"], (sup + 0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2)


def test_strong_view_keeps_8_bits_and_jitters_brightness_and_contrast():
    image = quantise(torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    strong = unimatch_strong_view(image, torch.Generator().manual_seed(1))
    assert torch.equal(strong * 255, torch.round(strong * 255))
    changed = (strong != image).flatten(1).any(1).float().mean()
    assert 0.75 < changed <= 1.0  # jitter 0.8, blur 0.5: P(unchanged) = 0.2 x 0.5
    assert strong.min() >= 0 and strong.max() <= 1


def test_stage_draws_the_unlabeled_and_mix_batches_and_follows_the_poly_schedule():
    (stage,) = method_stages(load_config(["cpu-small"], ["method=unimatch"]))
    assert (stage.iterations, stage.batch_labeled, stage.batch_unlabeled) == (6000, 4, 8)
    assert not stage.constant_lr and not stage.nesterov and stage.build(4).teacher is None
