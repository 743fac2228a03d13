"""Mean teacher: its frozen EMA teacher, the consistency loss and its ramp over a fraction of the
run, and a teacher that sees the unlabeled slices only (as SSL4MIS's)."""

import math

import pytest
import torch

from mona.config import MeanTeacherConfig
from mona.engine.schedule import ema_update
from mona.methods.mean_teacher import MeanTeacher

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_teacher_losses_and_frozen_teacher(random_batches):
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

    labeled, unlabeled = random_batches()
    losses = method.step(labeled, unlabeled, 0.5, torch.Generator().manual_seed(1))
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


def consistency_weight(method, progress, random_batches):
    """The weight of the consistency term, measured with the supervised term switched off."""
    method.seg_loss = NoLoss()
    labeled, unlabeled = random_batches(seed=2)
    losses = method.step(labeled, unlabeled, progress, torch.Generator().manual_seed(3))
    assert losses["sup"] == 0 and losses["consistency"] > 0
    return (losses["loss"] / losses["consistency"]).item()


@pytest.mark.parametrize("progress, ramp", [(0.0, math.exp(-5.0)), (0.1, math.exp(-5.0 * 0.5625)),
                                            (0.4, 1.0), (0.9, 1.0)])
def test_mean_teacher_consistency_ramp(progress, ramp, random_batches):
    torch.manual_seed(0)
    method = MeanTeacher(4, MeanTeacherConfig(consistency=0.1, rampup=0.4))
    weight = consistency_weight(method, progress, random_batches)
    assert weight == pytest.approx(0.1 * ramp, rel=1e-4)
    if progress == 0.0:
        assert weight < 0.001


def test_mean_teacher_ramp_is_a_fraction_of_the_run(random_batches):
    torch.manual_seed(0)
    short = MeanTeacher(4, MeanTeacherConfig(consistency=0.5, rampup=0.2))
    assert consistency_weight(short, 0.2, random_batches) == pytest.approx(0.5, rel=1e-4)
    assert consistency_weight(short, 0.1, random_batches) == pytest.approx(0.5 * math.exp(-5.0 * 0.25), rel=1e-4)


def test_mean_teacher_runs_its_teacher_on_the_unlabeled_slices_only(random_batches):
    """SSL4MIS's teacher sees the unlabeled half alone; a forward on the labeled half would be waste."""
    torch.manual_seed(0)
    method = MeanTeacher(4, MeanTeacherConfig())
    seen = []
    method.teacher.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    labeled, unlabeled = random_batches(n=3)
    unlabeled = {"image": unlabeled["image"][:2]}
    method.step(labeled, unlabeled, 0.5, torch.Generator().manual_seed(0))
    assert seen == [2]
