"""Methods: named finite losses, mean teacher's frozen teacher and its consistency ramp."""

import math

import pytest
import torch

from mona.config import MeanTeacherConfig, load_config
from mona.engine.schedule import ema_update
from mona.methods import METHODS, method_stages
from mona.methods.base import Method
from mona.methods.mean_teacher import MeanTeacher
from mona.methods.supervised import Supervised

pytestmark = pytest.mark.usefixtures("one_thread")


def batches(seed=0, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    labeled = {"image": torch.rand(n, 1, size, size, generator=g),
               "label": torch.randint(0, 4, (n, size, size), generator=g)}
    unlabeled = {"image": torch.rand(n, 1, size, size, generator=g)}
    return labeled, unlabeled


TINY_MONA = ["mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=8", "mona.num_negatives=8",
             "mona.bank_size=64", "mona.background_bank_size=64", "mona.confidence_threshold=0.3"]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_declares_stages_that_train(name):
    """Each method of the registry: its stages build Methods whose step gives finite named losses
    and a gradient; later stages start from an earlier stage's student."""
    config = load_config([], [f"method={name}", "data.image_size=32", "mean_teacher.ema=0.95", *TINY_MONA])
    stages = method_stages(config)
    assert stages and len({stage.name for stage in stages}) == len(stages)
    assert all(not stage.init_from or stage.init_from in {s.name for s in stages[:i]}
               for i, stage in enumerate(stages))
    labeled, unlabeled = batches()
    for stage in stages:
        torch.manual_seed(0)
        method = stage.build(4)
        assert isinstance(method, Method) and method.model.head.out_channels == 4
        losses = method.training_step(labeled, unlabeled if method.uses_unlabeled else None, 0.5,
                                      torch.Generator().manual_seed(0))
        assert "loss" in losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.parameters())


def test_mean_teacher_stage_reads_its_config():
    (stage,) = method_stages(load_config([], ["method=mean_teacher", "mean_teacher.ema=0.95", "train.iterations=7",
                                             "data.batch_labeled=3", "optim.nesterov=true"]))
    method = stage.build(3)
    assert isinstance(method, MeanTeacher) and method.ema == 0.95
    assert (stage.name, stage.iterations, stage.batch_labeled, stage.nesterov) == ("", 7, 3, True)


@pytest.mark.parametrize("overrides, names", [
    ([], ["pretrain", "finetune"]), (["mona.stage=pretrain"], ["pretrain"]), (["mona.stage=finetune"], ["finetune"]),
    (["mona.pretrain=false"], ["finetune"]),
])
def test_mona_stage_list_follows_its_switches(overrides, names):
    stages = method_stages(load_config([], ["method=mona", "mona.pretrain_iterations=5", "train.iterations=9",
                                           *overrides]))
    assert [s.name for s in stages] == names
    finetune = stages[-1]
    if finetune.name == "finetune":
        assert finetune.nesterov and finetune.iterations == 9
        assert finetune.init_from == ("" if "mona.pretrain=false" in overrides else "pretrain")
    if stages[0].name == "pretrain":
        assert stages[0].iterations == 5


def test_supervised_losses():
    torch.manual_seed(0)
    method = Supervised(4)
    assert method.teacher is None and not method.uses_unlabeled and method.ema_pairs() == []
    labeled, _ = batches()
    losses = method.training_step(labeled, None, 0.3, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "sup"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss"].requires_grad and losses["loss"] > 0
    losses["loss"].backward()
    assert method.model.head.weight.grad is not None


def test_mean_teacher_losses_and_frozen_teacher():
    torch.manual_seed(0)
    method = MeanTeacher(4, MeanTeacherConfig())
    assert method.uses_unlabeled
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    trainable = method.trainable_parameters()
    assert trainable and not teacher_ids & {id(p) for p in trainable}
    assert len(trainable) == len(list(method.model.parameters()))
    assert method.ema_pairs() == [(method.teacher, method.model)]
    # the teacher starts as a copy of the student, in separate tensors
    for t, s in zip(method.teacher.parameters(), method.model.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr() and not t.requires_grad

    labeled, unlabeled = batches()
    losses = method.training_step(labeled, unlabeled, 0.5, torch.Generator().manual_seed(1))
    assert set(losses) == {"loss", "sup", "consistency"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["consistency"] > 0  # the teacher sees noise, the student does not
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.model.parameters())
    optimizer.step()
    pairs = list(zip(method.teacher.parameters(), method.model.parameters()))
    differs = [not torch.equal(t, s) for t, s in pairs]
    # (conv biases just before a BatchNorm get ~0 gradient and may stay put)
    assert sum(differs) >= 0.7 * len(differs) and not torch.equal(method.teacher.head.weight, method.model.head.weight)
    # after the engine's EMA update the teacher moves towards the student, but is not it
    before = [t.clone() for t, _ in pairs]
    ema_update(method.teacher, method.model, 0.9)
    for (t, s), old in zip(pairs, before):
        assert torch.allclose(t, 0.9 * old + 0.1 * s, atol=1e-7)
    assert not torch.equal(method.teacher.head.weight, method.model.head.weight)


class NoLoss(torch.nn.Module):
    def forward(self, logits, labels):
        return logits.sum() * 0.0


def consistency_weight(method, progress):
    """The weight of the consistency term, measured with the supervised term switched off."""
    method.seg_loss = NoLoss()
    labeled, unlabeled = batches(seed=2)
    losses = method.training_step(labeled, unlabeled, progress, torch.Generator().manual_seed(3))
    assert losses["sup"] == 0 and losses["consistency"] > 0
    return (losses["loss"] / losses["consistency"]).item()


@pytest.mark.parametrize("progress, ramp", [(0.0, math.exp(-5.0)), (0.1, math.exp(-5.0 * 0.5625)),
                                            (0.4, 1.0), (0.9, 1.0)])
def test_mean_teacher_consistency_ramp(progress, ramp):
    torch.manual_seed(0)
    method = MeanTeacher(4, MeanTeacherConfig(consistency=0.1, rampup=0.4))
    weight = consistency_weight(method, progress)
    assert weight == pytest.approx(0.1 * ramp, rel=1e-4)
    if progress == 0.0:
        assert weight < 0.001


def test_mean_teacher_ramp_is_a_fraction_of_the_run():
    torch.manual_seed(0)
    short = MeanTeacher(4, MeanTeacherConfig(consistency=0.5, rampup=0.2))
    assert consistency_weight(short, 0.2) == pytest.approx(0.5, rel=1e-4)
    assert consistency_weight(short, 0.1) == pytest.approx(0.5 * math.exp(-5.0 * 0.25), rel=1e-4)


def test_mean_teacher_runs_its_teacher_on_the_unlabeled_slices_only():
    """SSL4MIS's teacher sees the unlabeled half alone; a forward on the labeled half would be waste."""
    torch.manual_seed(0)
    method = MeanTeacher(4, MeanTeacherConfig())
    seen = []
    method.teacher.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    labeled, unlabeled = batches(n=3)
    unlabeled = {"image": unlabeled["image"][:2]}
    method.training_step(labeled, unlabeled, 0.5, torch.Generator().manual_seed(0))
    assert seen == [2]
