"""Schedules as fractions of the run (poly lr, sigmoid ramp against SSL4MIS's) and the EMA update."""

import math

import pytest
import torch
from torch import nn

from mona.engine.schedule import ema_momentum, ema_update, poly_lr
from mona.methods.base import sigmoid_rampup

# --- schedules -------------------------------------------------------------------------------


def test_poly_lr():
    assert poly_lr(0.01, 0.0) == pytest.approx(0.01)
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 0.9, power=2.0) == pytest.approx(0.01 * 0.1**2)
    assert poly_lr(0.01, 1.0) == 0.0 and poly_lr(0.01, 1.5) == 0.0
    values = [poly_lr(0.01, t / 10) for t in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def ssl4mis_weight(iteration, consistency=0.1, rampup_epochs=200.0):
    """SSL4MIS's train_mean_teacher_2D: consistency * sigmoid_rampup(iter_num // 150, 200)."""
    epoch = iteration // 150
    phase = 1.0 - min(max(epoch, 0.0), rampup_epochs) / rampup_epochs
    return consistency * math.exp(-5.0 * phase * phase)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0.0, 0.4) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(0.2, 0.4) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(0.4, 0.4) == 1.0
    assert sigmoid_rampup(0.7, 0.4) == 1.0
    assert sigmoid_rampup(0.1, 0.0) == 1.0
    values = [sigmoid_rampup(t / 20, 0.4) for t in range(9)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_rampup_scales_with_the_run_unlike_ssl4mis():
    # a 3000-iteration run at 40 %: our fractional ramp is done, SSL4MIS's (tuned for 30000) is near 0
    iteration, total = 1200, 3000
    assert 0.1 * sigmoid_rampup(iteration / total, 0.4) == pytest.approx(0.1)
    assert ssl4mis_weight(iteration) < 0.002
    # and over 30000 iterations the two agree at the end of the ramp
    assert ssl4mis_weight(30000) == pytest.approx(0.1 * sigmoid_rampup(1.0, 0.4))


# --- EMA -------------------------------------------------------------------------------------

def test_ema_momentum_warm_up():
    assert ema_momentum(0.99, 0) == 0.0
    assert ema_momentum(0.99, 9) == pytest.approx(0.9)
    assert ema_momentum(0.99, 1000) == 0.99


def test_ema_update_equals_the_formula():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student(torch.randn(8, 3))  # moves the student's running statistics and counter
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    ema_update(teacher, student, 0.9)
    after = teacher.state_dict()
    for key, value in after.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * before_t[key] + 0.1 * before_s[key], atol=1e-7), key
        else:  # integer buffers (num_batches_tracked) are left alone
            assert torch.equal(value, before_t[key]), key
    assert all(torch.equal(v, before_s[k]) for k, v in student.state_dict().items())  # student untouched
    ema_update(teacher, student, 0.0)
    floats = {k: v for k, v in student.state_dict().items() if v.is_floating_point()}
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in floats.items())
