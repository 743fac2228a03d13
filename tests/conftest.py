"""Shared test fixtures."""

import contextlib
import os
import signal
import types

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module that trains or predicts: tensors in tests are tiny, and on a
    shared 2-core machine OpenMP spin-waits make two threads up to 50x slower than one.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def random_batches():
    """`random_batches(seed=0, n=2, size=32)`: a labeled batch (random images, labels of 4 classes)
    and an unlabeled one, as a method's `training_step` takes them."""

    def make(seed=0, n=2, size=32):
        g = torch.Generator().manual_seed(seed)
        labeled = {"image": torch.rand(n, 1, size, size, generator=g),
                   "label": torch.randint(0, 4, (n, size, size), generator=g)}
        return labeled, {"image": torch.rand(n, 1, size, size, generator=g)}

    return make


@pytest.fixture
def interrupt_at():
    """`with interrupt_at(MethodClass, iterations, stop) as calls:` presses Ctrl-C (sends this process
    SIGINT) while the method's training step runs for iteration `stop` of `iterations`; with
    `at_once=True` it raises KeyboardInterrupt there instead, as a second Ctrl-C does. `calls` lists the
    iterations the step was called for. The step is restored on leaving the block."""

    @contextlib.contextmanager
    def patch(method_class, iterations, stop, at_once=False):
        original = method_class.training_step
        calls = []

        def interrupted_step(self, labeled, unlabeled, progress, generator):
            calls.append(round(progress * iterations))
            if calls[-1] == stop:
                if at_once:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)
            return original(self, labeled, unlabeled, progress, generator)

        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(method_class, "training_step", interrupted_step)
            yield calls

    return patch


class StubNet(torch.nn.Module):
    """A stand-in for the UNet in wiring tests: logits are a fixed, input-dependent function,
    different for each `tag` (so a test can tell which network produced what), with one trainable
    scale; every call is recorded as (input, training mode). `forward_feature_perturbation`
    returns the clean logits and another fixed function of them."""

    def __init__(self, tag: float, num_classes: int = 4):
        super().__init__()
        self.tag, self.num_classes = tag, num_classes
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def logits(self, x):
        classes = torch.arange(1, self.num_classes + 1, dtype=x.dtype).view(1, -1, 1, 1)
        return self.scale * 3 * torch.sin(classes * (5 + self.tag) * x + self.tag)

    def forward(self, x):
        self.calls.append((x.detach().clone(), self.training))
        return types.SimpleNamespace(logits=self.logits(x))

    def forward_feature_perturbation(self, x, p=0.5):
        self.calls.append((x.detach().clone(), self.training, "fp"))
        clean = self.logits(x)
        return clean, 0.5 * clean.flip(1)


@pytest.fixture
def stub_net():
    """`stub_net(tag)`: a `StubNet`."""
    return StubNet


@pytest.fixture
def without_weak_augmentation(monkeypatch):
    """`without_weak_augmentation(module)`: the method module's `weak_views` (and `weak_augment`, where
    it imports one) return their inputs, so a wiring test can follow every pixel."""

    def patch(module):
        monkeypatch.setattr(module, "weak_views", lambda labeled, unlabeled, generator: (
            labeled["image"], labeled["label"], unlabeled["image"]))
        if hasattr(module, "weak_augment"):
            monkeypatch.setattr(module, "weak_augment", lambda image, label, generator: (image, label))

    return patch
