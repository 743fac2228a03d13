import collections
import doctest

import pytest
import torch

import mona.losses.queue as queue_module
from mona.losses import ClassMemoryBank, FeatureQueue

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _oldest_first(queue: FeatureQueue) -> torch.Tensor:
    """The queue's contents from oldest to newest, read from its buffers."""
    n = len(queue)
    if n < queue.size:
        return queue.bank[:n]
    return torch.roll(queue.bank, -int(queue.ptr), dims=0)


def test_docstring_examples_run():
    result = doctest.testmod(queue_module)
    assert result.attempted > 0 and result.failed == 0


def test_push_normalises_and_fills_in_order():
    queue = FeatureQueue(size=4, dim=2)
    queue.push(torch.tensor([[3.0, 4.0], [0.0, -2.0], [5.0, 0.0]]))
    assert len(queue) == 3 and int(queue.ptr) == 3
    torch.testing.assert_close(queue.items(), torch.tensor([[0.6, 0.8], [0.0, -1.0], [1.0, 0.0]]))


def test_wrap_around_overwrites_oldest_slots():
    queue = FeatureQueue(size=4, dim=1)
    queue.push(torch.ones(3, 1))
    queue.push(-torch.ones(3, 1))  # slots 3, 0, 1
    assert len(queue) == 4 and int(queue.ptr) == 2
    torch.testing.assert_close(queue.bank[:, 0], torch.tensor([-1.0, -1.0, 1.0, -1.0]))


@pytest.mark.parametrize("device", DEVICES)
def test_fifo_matches_a_deque_over_many_pushes(device):
    generator = torch.Generator().manual_seed(0)
    queue = FeatureQueue(size=5, dim=3).to(device)
    reference = collections.deque(maxlen=5)
    for n in [2, 1, 4, 0, 7, 3, 5, 1, 9, 2]:
        x = torch.randn(n, 3, generator=generator)
        queue.push(x.to(device))
        for row in x:
            reference.append(row / row.norm())
        assert len(queue) == len(reference)
        torch.testing.assert_close(_oldest_first(queue).cpu(), torch.stack(list(reference)))


def test_push_larger_than_size_keeps_newest():
    queue = FeatureQueue(size=3, dim=1)
    queue.push(torch.ones(2, 1))
    queue.push(torch.tensor([[-1.0], [1.0], [-1.0], [-1.0], [1.0]]))
    torch.testing.assert_close(_oldest_first(queue)[:, 0], torch.tensor([-1.0, -1.0, 1.0]))


def test_state_dict_round_trip_and_gather_hook():
    queue = FeatureQueue(size=6, dim=2, gather_fn=lambda x: torch.cat([x, -x]))
    queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert len(queue) == 4
    assert set(queue.state_dict()) == {"bank", "ptr", "count"}
    restored = FeatureQueue(size=6, dim=2)
    restored.load_state_dict(queue.state_dict())
    assert len(restored) == 4 and int(restored.ptr) == 4
    torch.testing.assert_close(restored.items(), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_push_rejects_wrong_width():
    with pytest.raises(ValueError):
        FeatureQueue(size=3, dim=2).push(torch.ones(2, 3))


def test_class_bank_keeps_classes_apart_with_own_sizes():
    bank = ClassMemoryBank([5, 2, 3], dim=2)
    bank.push(1, torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    bank.push(2, torch.tensor([[0.0, 2.0]]))
    assert [bank.filled(c) for c in range(3)] == [0, 2, 1]
    torch.testing.assert_close(_oldest_first(bank.queues[1]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    torch.testing.assert_close(bank.queues[2].items(), torch.tensor([[0.0, 1.0]]))
    assert "queues.0.bank" in bank.state_dict() and bank.state_dict()["queues.0.bank"].shape == (5, 2)


def test_class_bank_sample_is_uniform_over_filled_and_reproducible():
    bank = ClassMemoryBank([10, 10], dim=2)
    rows = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    bank.push(0, rows)
    drawn = bank.sample(0, 40, torch.Generator().manual_seed(3))
    expected_index = torch.randint(6, (40,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn, torch.nn.functional.normalize(rows, dim=1)[expected_index])
    with pytest.raises(ValueError):
        bank.sample(1, 4)
