import doctest

import pytest
import torch

import mona.losses.nearest_neighbour as nearest_neighbour_module
from mona.losses import FeatureQueue, NearestNeighbourLoss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def reference_nn(student: torch.Tensor, bank: torch.Tensor, topk: int) -> torch.Tensor:
    """Loop reference, differentiable in `student`: neighbours chosen by cosine, one row at a time."""
    terms = []
    for s in student:
        cosines = [torch.dot(s, b) / (s.norm() * b.norm()) for b in bank]
        order = sorted(range(len(bank)), key=lambda i: -cosines[i].item())[:topk]
        terms.extend(2 - 2 * cosines[i] for i in order)
    return torch.stack(terms).mean()


def test_docstring_examples_run():
    result = doctest.testmod(nearest_neighbour_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("device", DEVICES)
def test_value_and_gradient_match_loop_reference(device):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 8, generator=generator, requires_grad=True)
    bank = torch.randn(36, 8, generator=generator)
    reference = reference_nn(student, bank, 5)
    (expected_grad,) = torch.autograd.grad(reference, student)
    on_device = student.detach().to(device).requires_grad_(True)
    loss = NearestNeighbourLoss(topk=5)(on_device, bank.to(device))
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(on_device.grad.cpu(), expected_grad, rtol=1e-4, atol=1e-6)


def test_gradient_pulls_student_to_neighbours_and_not_into_bank():
    generator = torch.Generator().manual_seed(1)
    queue = FeatureQueue(size=36, dim=8)
    queue.push(torch.randn(36, 8, generator=generator))
    student = torch.randn(3, 8, generator=generator, requires_grad=True)
    bank = queue.items().clone().requires_grad_(True)
    loss_fn = NearestNeighbourLoss(topk=5)
    loss = loss_fn(student, bank)
    loss.backward()
    assert student.grad.abs().sum() > 0 and bank.grad is None
    with torch.no_grad():
        moved = student - 0.5 * student.grad / student.grad.norm(dim=1, keepdim=True)
    assert float(loss_fn(moved, queue.items())) < loss.item()


def test_fewer_entries_than_topk_and_exact_neighbour():
    student = torch.tensor([[1.0, 0.0]])
    bank = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # both entries used: cos 1 and cos 0
    assert float(NearestNeighbourLoss(topk=5)(student, bank)) == pytest.approx(1.0)
    assert float(NearestNeighbourLoss(topk=1)(student, bank)) == pytest.approx(0.0)


def test_empty_bank_gives_graph_zero():
    student = torch.randn(2, 4, requires_grad=True)
    loss = NearestNeighbourLoss()(student, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and float(student.grad.abs().sum()) == 0.0


def test_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(2)
    student, bank = torch.randn(6, 32, generator=generator), torch.randn(36, 32, generator=generator)
    expected = NearestNeighbourLoss()(student, bank)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = NearestNeighbourLoss()(student, bank)
        low = NearestNeighbourLoss()(student.bfloat16(), bank.bfloat16())
    assert same.dtype == low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(same, expected)
    torch.testing.assert_close(low, expected, rtol=2e-2, atol=2e-2)
