"""The method registry: every method declares stages that train, with named finite losses, and no
step waits for the device except where a method's own algorithm needs the host."""

import contextlib
import importlib

import pytest
import torch

from mona.config import load_config
from mona.methods import METHODS, method_stages
from mona.methods.base import Method
from mona.methods.mean_teacher import MeanTeacher

pytestmark = pytest.mark.usefixtures("one_thread")


TINY_MONA = ["mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=8", "mona.num_negatives=8",
             "mona.bank_size=64", "mona.background_bank_size=64", "mona.confidence_threshold=0.3"]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_declares_stages_that_train(name, random_batches):
    """Each method of the registry: its stages build Methods whose step gives finite named losses
    and a gradient; later stages start from an earlier stage's student."""
    config = load_config([], [f"method={name}", "data.image_size=32", "mean_teacher.ema=0.95", *TINY_MONA])
    stages = method_stages(config)
    assert stages and len({stage.name for stage in stages}) == len(stages)
    assert all(not stage.init_from or stage.init_from in {s.name for s in stages[:i]}
               for i, stage in enumerate(stages))
    labeled, unlabeled = random_batches()
    for stage in stages:
        torch.manual_seed(0)
        method = stage.build(4)
        assert isinstance(method, Method) and method.model.head.out_channels == 4
        losses = method.step(labeled, unlabeled if method.uses_unlabeled else None, 0.5,
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


# Where a step may read a device tensor on the host, and why (function name -> reason)
LIBRARY_CHECKS = {"_check_async": "kornia's argument checks: on CUDA torch._assert_async, which does not wait"}
INHERENT_HOST_READS = {
    "bcp": {"largest_component_labels": "BCP's pseudo-labels keep each class's largest connected component, "
                                        "found on the host (scipy) as BCP's code does (skimage)"},
    "abd": {"largest_component_labels": "BCP's pseudo-labels, as ABD's code builds them"},
    "mona": {"_class_counts": "L_contrast's per-class counts decide how many numbers a step draws, and their "
                              "range; drawing without them changes every later draw (losses/contrast.py)"},
}
# the modules that call each exempt function by its name there (patched for CUDA's sync check)
EXEMPT_CALLERS = {"largest_component_labels": ("mona.methods.bcp", "mona.methods.abd"),
                  "_class_counts": ("mona.losses.contrast",)}


def two_steps(name, device, wrap_step=contextlib.nullcontext):
    """Every stage of method `name` takes two steps (the second with filled queues and banks) on `device`."""
    config = load_config([], [f"method={name}", "data.image_size=32", "data.batch_labeled=2",
                              "data.batch_unlabeled=2", *TINY_MONA])
    for stage in method_stages(config):
        torch.manual_seed(0)
        method = stage.build(4).to(device)
        for step in range(2):
            g = torch.Generator().manual_seed(step)
            labeled = {"image": torch.rand(stage.batch_labeled, 1, 32, 32, generator=g).to(device),
                       "label": torch.randint(0, 4, (stage.batch_labeled, 32, 32), generator=g).to(device)}
            unlabeled = {"image": torch.rand(stage.batch_unlabeled, 1, 32, 32, generator=g).to(device)}
            unlabeled = unlabeled if method.uses_unlabeled else None
            prepared = method.prepare(labeled, unlabeled, 0.5, g)  # on the host, before the step, as the engine does
            with wrap_step():
                losses = method.training_step(labeled, unlabeled, 0.5, prepared)
            losses["loss"].backward()


@pytest.mark.parametrize("name", list(METHODS))
def test_no_step_reads_the_device_on_the_host(name, host_reads):
    """The CPU stand-in for CUDA's sync check: no `.item()`, `.tolist()`, `.cpu()`, `bool(tensor)` or
    data-dependent shape on a device tensor inside a step, but for the documented exemptions."""
    found = []

    @contextlib.contextmanager
    def watched():
        reads = host_reads(exempt=(*LIBRARY_CHECKS, *INHERENT_HOST_READS.get(name, {})))
        with reads:
            yield
        found.extend(reads.found)

    two_steps(name, "cpu", watched)
    assert not found, "\n".join(dict.fromkeys(found))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(METHODS))
def test_no_step_waits_for_cuda(name, monkeypatch):
    """torch.cuda's sync debug mode raises on any wait for the GPU inside a step; the exempt functions
    run with it off."""
    for function in INHERENT_HOST_READS.get(name, {}):
        for module_name in EXEMPT_CALLERS[function]:
            module = importlib.import_module(module_name)
            original = getattr(module, function)

            def allowed(*args, _original=original, **kwargs):
                torch.cuda.set_sync_debug_mode("default")
                try:
                    return _original(*args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("error")

            monkeypatch.setattr(module, function, allowed)

    @contextlib.contextmanager
    def strict():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    two_steps(name, "cuda", strict)


def test_the_host_read_check_tells_host_draws_from_device_reads(host_reads):
    model, g = torch.nn.Linear(2, 1), torch.Generator().manual_seed(0)
    with host_reads() as reads:
        int(torch.randint(3, (1,), generator=g)) + float(torch.rand(2, generator=g).sum())  # host draws: allowed
        moved = torch.rand(2, generator=g).to("cpu")  # as `host_to_device` moves it: now on the device
        bool(model.weight.sum() > 0), moved.tolist(), model.weight[model.weight > 0]
    assert [found.split()[0] for found in reads.found] == ["__bool__", "tolist", "__getitem__"]


@pytest.mark.parametrize("name, graphs", [("supervised", 1), ("mean_teacher", 1), ("mona", 2), ("unimatch", 1)])
def test_a_compiled_step_is_one_graph_with_the_eager_losses(name, graphs):
    """`train.compile` compiles `training_step`. With its draws and ramp weight prepared on the host
    (`Method.prepare`), a supervised, mean-teacher, MONA stage-1 or UniMatch step is one graph (`fullgraph=True`
    fails on a break), compiled once for steps at different progress (MONA's stage 1 once more when
    its queues have filled: their length is a shape), with the eager losses and gradients.
    Dynamo with AOT autograd and eager kernels ("aot_eager"): Inductor's code generation took 150 s
    for a step on a busy 2-core CPU, too long for the suite; on a GPU, benchmarks/train_speed.py
    --compile-step times it."""
    from torch._dynamo.utils import counters

    stage = method_stages(load_config([], [f"method={name}", "data.image_size=16", "mona.patch_size=8",
                                           "mona.patch_stride=8", "mona.queue_size=4"]))[0]
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        torch._dynamo.reset()
        counters.clear()
        method = stage.build(4)
        step = (torch.compile(method.training_step, backend="aot_eager", fullgraph=True) if compiled
                else method.training_step)
        g = torch.Generator().manual_seed(0)
        steps = []
        for progress in (0.0, 0.1, 0.7):
            labeled = {"image": torch.rand(2, 1, 16, 16, generator=g),
                       "label": torch.randint(0, 4, (2, 16, 16), generator=g)}
            unlabeled = {"image": torch.rand(2, 1, 16, 16, generator=g)}
            prepared = method.prepare(labeled, unlabeled, progress, torch.Generator().manual_seed(1))
            losses = step(labeled, unlabeled, progress, prepared)
            losses["loss"].backward()
            steps.append(({key: value.detach() for key, value in losses.items()}, method.model.head.weight.grad))
        results.append(steps)
        if compiled:
            assert counters["stats"]["unique_graphs"] == graphs
    for (eager, eager_grad), (compiled, compiled_grad) in zip(*results):
        assert eager.keys() == compiled.keys()
        for key in eager:
            torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-6)
    if name == "mean_teacher":
        assert results[0][-1][0]["consistency"] > 0
