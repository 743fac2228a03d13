"""BCP's wiring with exact oracles: which images each network sees, pasted pixel by pixel, which
target and weight each region of each mixed image gets, and the total recomputed from its parts."""

import numpy as np
import pytest
import torch

from mona.config import load_config
from mona.evaluation.postprocess import keep_largest_component
from mona.losses.copy_paste import CopyPasteLoss
from mona.methods import bcp as bcp_module
from mona.methods import method_stages
from mona.methods.bcp import BCPPretrain, BCPSelfTrain, largest_component_labels

SIZE = 16
BOX = torch.zeros(SIZE, SIZE, dtype=torch.bool)
BOX[3:13, 2:12] = True


@pytest.fixture
def fixed_views(monkeypatch, without_weak_augmentation):
    """No weak augmentation and a known box: the oracle then follows every pixel."""
    without_weak_augmentation(bcp_module)
    monkeypatch.setattr(bcp_module, "copy_paste_box", lambda size, generator, fraction, device: BOX)


def batches(seed=0):
    generator = torch.Generator().manual_seed(seed)
    labeled = {"image": torch.rand(4, 1, SIZE, SIZE, generator=generator),
               "label": torch.randint(0, 4, (4, SIZE, SIZE), generator=generator)}
    return labeled, {"image": torch.rand(4, 1, SIZE, SIZE, generator=generator)}


def test_pretrain_pastes_b_into_a_and_scores_each_region_with_its_own_label(fixed_views, stub_net):
    method = BCPPretrain(4)
    method.model = stub_net(0)
    labeled, _ = batches()
    losses = method.step(labeled, None, 0.0, torch.Generator().manual_seed(0))
    (seen, training), = method.model.calls
    image, label = labeled["image"], labeled["label"]
    assert torch.equal(seen, torch.where(BOX, image[2:], image[:2]))  # a outside the box, b's crop inside
    dice, ce = CopyPasteLoss()(method.model.logits(seen), label[:2], label[2:], BOX, 1.0, 1.0)
    assert torch.allclose(losses["loss"], (dice + ce) / 2) and torch.allclose(losses["dice"], dice)


def test_selftrain_wiring(fixed_views, stub_net):
    method = BCPSelfTrain(4, ema=0.99, unlabeled_weight=0.5)
    method.model, method.teacher = stub_net(0), stub_net(1)
    labeled, unlabeled = batches(1)
    losses = method.step(labeled, unlabeled, 0.0, torch.Generator().manual_seed(0))
    image, label, image_u = labeled["image"], labeled["label"], unlabeled["image"]
    # the teacher pseudo-labels the two unlabeled halves, one forward each
    assert [tuple(call[0].shape) for call in method.teacher.calls] == [(2, 1, SIZE, SIZE)] * 2
    assert torch.equal(method.teacher.calls[0][0], image_u[:2]) and torch.equal(method.teacher.calls[1][0],
                                                                                 image_u[2:])
    pseudo = [torch.from_numpy(np.stack([keep_largest_component(x, range(1, 4))
                                         for x in method.teacher.logits(half).argmax(1).numpy()]))
              for half in (image_u[:2], image_u[2:])]
    # the student: labeled crop into unlabeled a, then unlabeled crop into labeled b, two forwards
    (in_unlabeled, _), (in_labeled, _) = method.model.calls
    assert torch.equal(in_unlabeled, torch.where(BOX, image[:2], image_u[:2]))
    assert torch.equal(in_labeled, torch.where(BOX, image_u[2:], image[2:]))
    mix = CopyPasteLoss()
    dice_u, ce_u = mix(method.model.logits(in_unlabeled), pseudo[0], label[:2], BOX, 0.5, 1.0)
    dice_l, ce_l = mix(method.model.logits(in_labeled), label[2:], pseudo[1], BOX, 1.0, 0.5)
    assert torch.allclose(losses["dice"], dice_u + dice_l) and torch.allclose(losses["ce"], ce_u + ce_l)
    assert torch.allclose(losses["loss"], (losses["dice"] + losses["ce"]) / 2)


def test_pseudo_labels_keep_each_class_largest_8_connected_component():
    logits = torch.zeros(1, 3, 5, 5)
    logits[0, 0] = 1
    for r, c in ((0, 0), (1, 1), (4, 4), (3, 0), (4, 0), (4, 1)):  # class 1: {(0,0),(1,1)} diagonal, and 3 pixels
        logits[0, 1, r, c] = 5
    logits[0, 2, 2, 3] = 5
    labels = largest_component_labels(logits)
    assert labels[0, 3, 0] == labels[0, 4, 0] == labels[0, 4, 1] == 1 and labels[0, 2, 3] == 2
    assert labels[0, 0, 0] == labels[0, 1, 1] == labels[0, 4, 4] == 0
    assert torch.equal(largest_component_labels(logits, largest_component=False), logits.argmax(1))


def test_stages_keep_the_code_ratio_constant_lr_and_start_from_the_best_pretraining():
    pretrain, selftrain = method_stages(load_config(["cpu-small"], ["method=bcp"]))
    assert (pretrain.iterations, selftrain.iterations) == (2000, 6000)  # 10000 : 30000
    assert pretrain.constant_lr and selftrain.constant_lr
    assert (selftrain.init_from, selftrain.init_checkpoint) == ("pretrain", "best")
    assert not pretrain.build(4).uses_unlabeled
    method = selftrain.build(4)
    assert method.ema == 0.99 and not method.ema_warmup
    assert method_stages(load_config([], ["method=bcp", "train.iterations=300", "bcp.pretrain_iterations=7"]))[
        0].iterations == 7


def test_selftrain_starts_student_and_teacher_from_the_best_pretraining_checkpoint(tmp_path, monkeypatch):
    from mona.data.phantom import write_phantom
    from mona.engine import run as run_module
    from mona.engine.checkpoint import load_checkpoint, student_weights
    from mona.engine.run import train

    data = write_phantom(tmp_path / "ds", patients=4, size=(32, 32), slices=(4, 4))
    started = {}
    original = BCPSelfTrain.start_from

    def spy(self, student, load):
        original(self, student, load)
        started.update(student={k: v.clone() for k, v in self.model.state_dict().items()},
                       teacher={k: v.clone() for k, v in self.teacher.state_dict().items()})

    monkeypatch.setattr(BCPSelfTrain, "start_from", spy)
    read = []
    monkeypatch.setattr(run_module, "load_checkpoint", lambda path: read.append(path) or load_checkpoint(path))
    out = tmp_path / "run"
    train(load_config([], [f"data.root={data}", f"out={out}", "method=bcp", "data.labeled=1", "data.image_size=32",
                           "data.batch_labeled=2", "data.batch_unlabeled=2", "train.iterations=2",
                           "bcp.pretrain_iterations=2", "train.val_every=1", "train.progress=false"]))
    assert out / "pretrain" / "best.pt" in read
    best = student_weights(load_checkpoint(out / "pretrain" / "best.pt"), out)
    for network in ("student", "teacher"):
        assert all(torch.equal(started[network][k], v) for k, v in best.items())
