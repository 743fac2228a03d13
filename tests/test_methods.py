"""The method registry: every method declares stages that train, with named finite losses."""

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
        losses = method.training_step(labeled, unlabeled if method.uses_unlabeled else None, 0.5,
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
