"""The supervised baseline: CE + Dice on the labeled slices, no teacher, no unlabeled stream."""

import pytest
import torch

from mona.methods.supervised import Supervised

pytestmark = pytest.mark.usefixtures("one_thread")


def test_supervised_losses(random_batches):
    torch.manual_seed(0)
    method = Supervised(4)
    assert method.teacher is None and not method.uses_unlabeled and method.ema_pairs() == []
    labeled, _ = random_batches()
    losses = method.step(labeled, None, 0.3, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "sup"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss"].requires_grad and losses["loss"] > 0
    losses["loss"].backward()
    assert method.model.head.weight.grad is not None
