"""Shared test fixtures."""

import contextlib
import os
import signal
import sys
import types
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode


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
    """`without_weak_augmentation(module)`: the method module's weak augmentation (`weak_views`,
    `weak_augment`, or `warp_views` and `warp_affine`, whose affine maps the method's `prepare` drew),
    whichever it imports, returns its inputs, so a wiring test can follow every pixel."""

    def patch(module):
        def unchanged(labeled, unlabeled):
            return labeled["image"], labeled["label"], unlabeled["image"]

        if hasattr(module, "weak_views"):
            monkeypatch.setattr(module, "weak_views", lambda labeled, unlabeled, _: unchanged(labeled, unlabeled))
        if hasattr(module, "warp_views"):
            monkeypatch.setattr(module, "warp_views", lambda _, labeled, unlabeled: unchanged(labeled, unlabeled))
        if hasattr(module, "weak_augment"):
            monkeypatch.setattr(module, "weak_augment", lambda image, label, generator: (image, label))
        if hasattr(module, "warp_affine"):
            monkeypatch.setattr(module, "warp_affine", lambda theta, image, label: (image, label))

    return patch


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory):
    """A phantom (4 train patients, 2 of them labeled; 3 val patients: 6 val volumes) and a mean-teacher
    run on it, trained for seconds: a run with a teacher, unlabeled cases and enough val volumes for the
    quality estimate to fit (mona.evaluation.quality)."""
    import warnings

    from mona.config import load_config
    from mona.data.phantom import write_phantom
    from mona.engine.run import train

    tmp = tmp_path_factory.mktemp("teacher_run")
    root, run = tmp / "phantom", tmp / "run"
    write_phantom(root, patients=8, size=(48, 48), slices=(4, 5), held_out=(3, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():  # the demo preset asks for bf16, which is switched off on CPUs without it
        warnings.simplefilter("ignore")
        train(load_config(["demo"], ["method=mean_teacher", f"data.root={root}", f"out={run}", "data.image_size=32",
                                     "data.labeled=2", "optim.lr=0.05", "train.iterations=30", "train.val_every=15",
                                     "train.progress=false"]))
    torch.set_num_threads(threads)
    return root, run


READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
DATA_SHAPED = {"nonzero", "masked_select", "unique", "argwhere"}
RANDOM = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial"}


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class HostReads(TorchFunctionMode):
    """On the CPU, records what would make a CUDA step wait for the device: a host read of a device
    tensor (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool`, `int`, `float`) or an op whose
    output shape depends on a device tensor's values (`nonzero`, boolean-mask indexing).

    Host tensors are those a CUDA step would keep on the host: draws from a CPU generator, tensors
    made without a `device=`, and what is computed from host tensors alone; `.to(device)` (how
    `mona.randomness.host_to_device` moves them) makes a device tensor. A call under a function
    named in `exempt` is allowed. `found` lists the rest, each with where it happened."""

    def __init__(self, exempt=()):
        super().__init__()
        self.host = {}  # id -> weak reference, for the host tensors
        self.exempt = set(exempt)
        self.found = []

    def _is_host(self, tensor):
        ref = self.host.get(id(tensor))
        return ref is not None and ref() is tensor

    def _frames(self):
        frame = sys._getframe(2)  # the caller of __torch_function__
        while frame is not None:
            yield frame
            frame = frame.f_back

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        device_inputs = [t for t in (*_tensors(args), *_tensors(kwargs)) if not self._is_host(t)]
        masked = name in ("__getitem__", "__setitem__") and any(t.dtype == torch.bool for t in _tensors(args[1:]))
        if device_inputs and (name in READS or name in DATA_SHAPED or masked):
            frames = list(self._frames())
            if not any(frame.f_code.co_name in self.exempt for frame in frames):
                where = [f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno}" for f in frames[:4]]
                self.found.append(f"{name} at {' < '.join(where)}")
        result = func(*args, **kwargs)
        generator = kwargs.get("generator")
        host = not device_inputs and ("device" not in kwargs or (
            name in RANDOM and generator is not None and generator.device.type == "cpu"))
        if name in ("to", "cuda") and any(isinstance(a, (torch.device, str)) for a in (*args[1:], *kwargs.values())):
            host = False
            if result is args[0]:  # a no-op on the CPU; a new tensor on CUDA
                result = result.view_as(result)
        if host:
            for tensor in _tensors(result):
                self.host[id(tensor)] = weakref.ref(tensor)
        return result


@pytest.fixture
def host_reads():
    """`with host_reads(exempt=(function names,)) as reads:` lists in `reads.found` the host reads of
    device tensors inside the block (see `HostReads`)."""
    return HostReads
