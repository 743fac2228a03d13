"""ABD's wiring with exact oracles: the teacher's four pseudo-labelling passes, each student's
copy-paste views, the cross supervision, the displaced images both students see, and the total."""

import numpy as np
import pytest
import torch

from mona.augment.displacement import adaptive_bidirectional_displacement
from mona.config import ABDConfig, load_config
from mona.evaluation.postprocess import keep_largest_component
from mona.losses.copy_paste import CopyPasteLoss
from mona.losses.masked_dice import MaskedDiceLoss
from mona.methods import abd as abd_module
from mona.methods import method_stages
from mona.methods.abd import ABDSelfTrain, abd_strong_view

SIZE = 16
BOX = torch.zeros(SIZE, SIZE, dtype=torch.bool)
BOX[2:12, 4:14] = True
CUTOUT = torch.zeros(SIZE, SIZE, dtype=torch.bool)
CUTOUT[0:5, 0:6] = True


@pytest.fixture
def fixed_views(monkeypatch, without_weak_augmentation):
    without_weak_augmentation(abd_module)
    # no draws but the displacement's coins, which come first from the step's generator
    monkeypatch.setattr(abd_module, "draw_weak_affine", lambda batch, generator, device: None)
    monkeypatch.setattr(abd_module, "draw_abd_strong", lambda *args: None)
    monkeypatch.setattr(abd_module, "apply_abd_strong", lambda images, labels, draws: (
        1 - images, torch.where(CUTOUT, 0, labels)))
    monkeypatch.setattr(abd_module, "copy_paste_box", lambda size, generator, fraction, device: BOX)


def pseudo_labels(net, images):
    return torch.from_numpy(np.stack([keep_largest_component(x, range(1, 4))
                                      for x in net.logits(images).argmax(1).numpy()]))


def test_abd_wiring(fixed_views, stub_net):
    method = ABDSelfTrain(4, ABDConfig(patch_grid=4, top_patches=4))
    method.model, method.model_2, method.teacher = stub_net(0), stub_net(2), stub_net(1)
    generator = torch.Generator().manual_seed(0)
    image, image_u = (torch.rand(4, 1, SIZE, SIZE, generator=generator) for _ in range(2))
    label = torch.randint(0, 4, (4, SIZE, SIZE), generator=generator)
    losses = method.step({"image": image, "label": label}, {"image": image_u}, 0.0,
                                  torch.Generator().manual_seed(5))
    adaptive = torch.rand(4, generator=torch.Generator().manual_seed(5)) < 0.5

    strong, strong_u, strong_label = 1 - image, 1 - image_u, torch.where(CUTOUT, 0, label)
    teacher_inputs = [call[0] for call in method.teacher.calls]  # weak halves, then strong halves
    for seen, expected in zip(teacher_inputs, (image_u[:2], image_u[2:], strong_u[:2], strong_u[2:]), strict=True):
        assert torch.equal(seen, expected)
    pseudo = [pseudo_labels(method.teacher, x) for x in (image_u[:2], image_u[2:], strong_u[:2], strong_u[2:])]

    inputs_1 = torch.cat([torch.where(BOX, image[:2], image_u[:2]), torch.where(BOX, image_u[2:], image[2:])])
    inputs_2 = torch.cat([torch.where(BOX, strong[:2], strong_u[:2]), torch.where(BOX, strong_u[2:], strong[2:])])
    calls_1, calls_2 = [c[0] for c in method.model.calls], [c[0] for c in method.model_2.calls]
    assert torch.equal(torch.cat(calls_1[:2]), inputs_1) and torch.equal(torch.cat(calls_2[:2]), inputs_2)
    logits_1, logits_2 = method.model.logits(inputs_1), method.model_2.logits(inputs_2)
    probs_1, probs_2 = torch.softmax(logits_1, 1), torch.softmax(logits_2, 1)
    displaced = adaptive_bidirectional_displacement(inputs_1, inputs_2, probs_1.amax(1), probs_2.amax(1), logits_1,
                                                    logits_2, adaptive, 4, 4)
    assert torch.equal(calls_1[2], displaced) and torch.equal(calls_2[2], displaced) and len(calls_1) == 3

    mix, dice = CopyPasteLoss(background_unmasked=True), MaskedDiceLoss(smooth=1e-5)

    def bcp(logits, label_a, label_b, pseudo_a, pseudo_b):
        dice_u, ce_u = mix(logits[:2], pseudo_a, label_a, BOX, 0.5, 1.0)
        dice_l, ce_l = mix(logits[2:], label_b, pseudo_b, BOX, 1.0, 0.5)
        return (dice_u + dice_l + ce_u + ce_l) / 2

    bcp_1 = bcp(logits_1, label[:2], label[2:], pseudo[0], pseudo[1])
    bcp_2 = bcp(logits_2, strong_label[:2], strong_label[2:], pseudo[2], pseudo[3])
    cross = dice(probs_1, probs_2.argmax(1)) + dice(probs_2, probs_1.argmax(1))
    d1, d2 = (torch.softmax(net.logits(displaced), 1) for net in (method.model, method.model_2))
    cross_displaced = dice(d1, d2.argmax(1)) + dice(d2, d1.argmax(1))
    assert torch.allclose(losses["bcp_1"], bcp_1) and torch.allclose(losses["bcp_2"], bcp_2)
    assert torch.allclose(losses["cross"], cross) and torch.allclose(losses["cross_displaced"], cross_displaced)
    assert torch.allclose(losses["loss"], bcp_1 + bcp_2 + cross + cross_displaced)


def test_strong_view_cuts_out_noise_labelled_background_then_jitters():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.full((200, 1, 32, 32), 0.5), torch.ones(200, 32, 32, dtype=torch.long)
    strong, strong_labels = abd_strong_view(images, labels, generator, 1.0, 0.8)
    assert ((strong_labels == 0).flatten(1).any(1)).all()  # p = 1: every image has a background box
    contrast_free = abd_strong_view(images, labels, torch.Generator().manual_seed(0), 1.0, 0.0)[0]
    inside = strong_labels == 0
    assert set(contrast_free[:, 0][inside].unique().tolist()) == {0.0, 1.0}  # {0, 1} noise in the box
    assert torch.equal(contrast_free[:, 0][~inside], images[:, 0][~inside])
    assert (strong != contrast_free).flatten(1).any(1).float().mean() > 0.95  # jitter always on
    assert abd_strong_view(images, labels, generator, 0.0, 0.8)[1].eq(1).all()


def test_stages_and_every_network_starting_from_the_pretraining_student():
    pretrain, selftrain = method_stages(load_config(["cpu-small"], ["method=abd"]))
    assert (pretrain.iterations, selftrain.iterations, selftrain.init_checkpoint) == (2000, 6000, "best")
    assert pretrain.build(4).mix_loss.dice.background_unmasked  # ABD's Dice, stage 1 too
    method = selftrain.build(4)
    weights = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in method.model.state_dict().items()}
    method.start_from(weights, lambda module, state: module.load_state_dict(state))
    for network in (method.model, method.model_2, method.teacher):
        assert all(torch.equal(network.state_dict()[k], v) for k, v in weights.items())
    assert {name for name, _ in method.named_children()} >= {"model", "model_2", "teacher"}
    assert method.ema_pairs() == [(method.teacher, method.model)]
