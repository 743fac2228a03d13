import doctest
import math

import pytest
import torch

import mona.losses.distillation as distillation_module
from mona.losses import SimilarityDistillationLoss, extract_patches

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() @ b.double()) / (a.double().norm() * b.double().norm()))


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def reference_isd(student, teacher, anchors, tau_s, tau_t) -> float:
    total = 0.0
    for s, t in zip(student, teacher):
        p_s = _softmax([_cos(s, a) / tau_s for a in anchors])
        p_t = _softmax([_cos(t, a) / tau_t for a in anchors])
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s) if pt > 0)
    return total / len(student)


def test_docstring_examples_run():
    result = doctest.testmod(distillation_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("device", DEVICES)
def test_matches_loop_reference(device):
    generator = torch.Generator().manual_seed(0)
    student, teacher, anchors = (torch.randn(n, 8, generator=generator) for n in (5, 5, 7))
    loss = SimilarityDistillationLoss(0.1, 0.01)(student.to(device), teacher.to(device), anchors.to(device))
    assert float(loss) == pytest.approx(reference_isd(student, teacher, anchors, 0.1, 0.01), rel=1e-4)


def test_zero_when_distributions_agree():
    generator = torch.Generator().manual_seed(1)
    z, anchors = torch.randn(4, 6, generator=generator), torch.randn(9, 6, generator=generator)
    assert float(SimilarityDistillationLoss(0.1, 0.1)(z, 3 * z, anchors)) == pytest.approx(0.0, abs=1e-6)
    assert float(SimilarityDistillationLoss(0.1, 0.01)(z, z, anchors)) > 0.01


def test_gradient_reaches_student_only():
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(4, 6, generator=generator, requires_grad=True)
    teacher = torch.randn(4, 6, generator=generator, requires_grad=True)
    anchors = torch.randn(10, 6, generator=generator, requires_grad=True)
    SimilarityDistillationLoss()(student, teacher, anchors).backward()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None and anchors.grad is None


def test_empty_queue_gives_graph_zero():
    student = torch.randn(3, 4, requires_grad=True)
    loss = SimilarityDistillationLoss()(student, torch.randn(3, 4), torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None and float(student.grad.abs().sum()) == 0.0


def test_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(3)
    student, teacher, anchors = (torch.randn(n, 16, generator=generator) for n in (6, 6, 36))
    loss_fn = SimilarityDistillationLoss()
    expected = loss_fn(student, teacher, anchors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = loss_fn(student, teacher, anchors)
        low = loss_fn(student.bfloat16(), teacher.bfloat16(), anchors.bfloat16())
    assert same.dtype == low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(same, expected)
    torch.testing.assert_close(low, expected, rtol=0.1, atol=0.05)


def test_extract_patches_matches_loop_reference():
    generator = torch.Generator().manual_seed(4)
    fmap = torch.randn(2, 3, 12, 16, generator=generator)
    patches = extract_patches(fmap, patch=8, stride=4, pooled=2)
    rows, cols = (12 - 8) // 4 + 1, (16 - 8) // 4 + 1
    assert patches.shape == (2 * rows * cols, 3, 2, 2)
    index = 0
    for b in range(2):
        for i in range(rows):
            for j in range(cols):
                window = fmap[b, :, 4 * i : 4 * i + 8, 4 * j : 4 * j + 8]
                for y in range(2):
                    for x in range(2):
                        expected = window[:, 4 * y : 4 * y + 4, 4 * x : 4 * x + 4].mean(dim=(1, 2))
                        torch.testing.assert_close(patches[index, :, y, x], expected)
                index += 1


def test_extract_patches_mona_geometry():
    patches = extract_patches(torch.randn(3, 4, 256, 256))
    assert patches.shape == (3 * 49, 4, 8, 8)
    with pytest.raises(ValueError):
        extract_patches(torch.randn(1, 4, 32, 32))
