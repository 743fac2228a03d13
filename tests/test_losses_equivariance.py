import doctest
import math

import pytest
import torch

import mona.losses.equivariance as equivariance_module
from mona.losses import EquivarianceLoss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def reference_eqv(target, prediction, mask) -> float:
    b, c, h, w = target.shape
    total, count = 0.0, 0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                if not mask[i, y, x]:
                    continue
                scores = [float(prediction[i, k, y, x]) for k in range(c)]
                top = max(scores)
                log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
                for k in range(c):
                    t = float(target[i, k, y, x])
                    if t > 0:
                        total += t * (math.log(t) - (scores[k] - log_norm))
                count += 1
    return total / count if count else 0.0


def _inputs(seed: int, shape=(2, 4, 5, 6)):
    generator = torch.Generator().manual_seed(seed)
    target = torch.softmax(torch.randn(*shape, generator=generator) * 2, dim=1)
    target[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # exact zeros: 0 log 0 = 0
    prediction = torch.randn(*shape, generator=generator)
    mask = torch.rand(shape[0], *shape[2:], generator=generator) > 0.4
    mask[0, 0, 0] = True
    return target, prediction, mask


def test_docstring_examples_run():
    result = doctest.testmod(equivariance_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("device", DEVICES)
def test_matches_loop_reference(device):
    target, prediction, mask = _inputs(0)
    loss = EquivarianceLoss()(target.to(device), prediction.to(device), mask.to(device))
    assert float(loss) == pytest.approx(reference_eqv(target, prediction, mask), rel=1e-5)


def test_only_masked_pixels_count():
    target, prediction, mask = _inputs(1)
    changed = prediction.clone()
    changed[~mask.unsqueeze(1).expand_as(prediction)] = 50.0
    torch.testing.assert_close(EquivarianceLoss()(target, changed, mask), EquivarianceLoss()(target, prediction, mask))


def test_zero_when_prediction_equals_target():
    target, _, mask = _inputs(2)
    target = target.clamp(min=1e-6)
    assert float(EquivarianceLoss()(target, target.log(), mask)) == pytest.approx(0.0, abs=1e-5)


def test_gradient_reaches_prediction_only():
    target, prediction, mask = _inputs(3)
    target.requires_grad_(True)
    prediction.requires_grad_(True)
    EquivarianceLoss()(target, prediction, mask).backward()
    assert target.grad is None
    assert prediction.grad.abs().sum() > 0
    unmasked = ~mask.unsqueeze(1).expand_as(prediction)
    assert float(prediction.grad[unmasked].abs().sum()) == 0.0


def test_empty_mask_gives_graph_zero():
    target, prediction, mask = _inputs(4)
    prediction.requires_grad_(True)
    loss = EquivarianceLoss()(target, prediction, torch.zeros_like(mask))
    loss.backward()
    assert loss.item() == 0.0 and float(prediction.grad.abs().sum()) == 0.0


def test_float32_under_bf16_autocast():
    target, prediction, mask = _inputs(5)
    expected = EquivarianceLoss()(target, prediction, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = EquivarianceLoss()(target, prediction, mask)
        low = EquivarianceLoss()(target.bfloat16(), prediction.bfloat16(), mask)
    assert same.dtype == low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(same, expected)
    torch.testing.assert_close(low, expected, rtol=3e-2, atol=3e-2)


def test_balanced_mean_is_the_mean_of_per_class_means():
    target, prediction, mask = _inputs(6)
    classes = torch.randint(0, 4, mask.shape, generator=torch.Generator().manual_seed(6))
    classes[mask & (classes == 2)] = 1  # a class absent from the mask does not count
    expected = [reference_eqv(target, prediction, mask & (classes == k)) for k in range(4)
                if bool((mask & (classes == k)).any())]
    loss = EquivarianceLoss()(target, prediction, mask, classes)
    assert len(expected) == 3 and float(loss) == pytest.approx(sum(expected) / 3, rel=1e-5)
    plain = EquivarianceLoss()(target, prediction, mask)
    assert float(plain) != pytest.approx(float(loss), rel=1e-3)  # the plain mean weighs classes by their pixels


def test_balanced_mean_of_an_empty_mask_is_a_graph_zero():
    target, prediction, mask = _inputs(7)
    prediction.requires_grad_(True)
    loss = EquivarianceLoss()(target, prediction, torch.zeros_like(mask), torch.zeros(mask.shape, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and float(prediction.grad.abs().sum()) == 0.0
