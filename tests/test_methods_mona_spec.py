"""MONA's stage-2 and stage-1 steps wired as MONA_SPEC says: defaults, targets, masks, views.

Each test spies on one seam of `training_step` (what a loss receives, what a network sees)
and checks it against the spec's formula on tiny random data.
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import mona.methods.mona as mona_module
from mona.augment.strong import StrongAugment, photometric_view
from mona.augment.warp import Warp, identity_grid, random_equivariance_warp
from mona.augment.weak import weak_views
from mona.config import MonaConfig
from mona.losses import AnatomicalContrastLoss
from mona.methods.mona import MonaFinetune, MonaPretrain

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = {  # MONA_SPEC sections 2-4
    "ema": 0.99,
    "pretrain_batch_labeled": 3, "pretrain_batch_unlabeled": 3, "queue_size": 36, "tau_student": 0.1,
    "tau_teacher": 0.01, "global_weight": 1.0, "local_weight": 1.0, "patch_size": 64, "patch_stride": 32,
    "finetune_batch_labeled": 4, "finetune_batch_unlabeled": 4, "rampup": 0.0,
    "contrast_weight": 0.01, "unsup_weight": 1.0, "eqv_weight": 1.0, "nn_weight": 1.0,
    "confidence_threshold": 0.97, "eqv_confidence": 0.7, "eqv_pixels": "foreground",
    "num_queries": 256, "num_negatives": 512, "contrast_temperature": 0.5,
    "bank_size": 30000, "background_bank_size": 50000, "nn_bank_size": 36, "nn_topk": 5,
    "representation_stride": 1,
    "pretrain": True, "tailness": True, "consistency": True, "diversity": True, "strong_aug": True,
    # the spec's readings of issue 21 (docs/method.md)
    "local_queue_size": 0, "eqv_labeled": True, "entropy_split": "spec", "diffeomorphism": "advmorph",
    "eqv_tps_centres": "moved",
}


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_config_defaults_are_the_spec():
    config = MonaConfig()
    assert {key: getattr(config, key) for key in SPEC} == SPEC
    contrast = _defaults(AnatomicalContrastLoss)
    assert (contrast["alpha0"], contrast["anchor_threshold"], contrast["negative_threshold"],
            contrast["labeled_top"]) == (20.0, 0.3, 0.97, 3)
    strong = StrongAugment()
    assert (strong.jitter_p, strong.jitter_range, strong.blur_p, strong.blur_sigma) == (0.5, (0.75, 1.25), 0.5,
                                                                                       (0.15, 1.15))
    assert (strong.deform_p, strong.grid, strong.magnitude, strong.use_cutmix) == (0.5, 32, 1.5, True)
    warp = _defaults(random_equivariance_warp)
    assert (warp["rotation"], warp["scale"], warp["translation"], warp["control_points"], warp["jitter"]) == (
        60.0, (0.8, 1.2), 0.1, 5, 0.01)


def test_built_losses_take_the_config():
    config = MonaConfig(num_queries=7, num_negatives=9, contrast_temperature=0.2, nn_topk=3, bank_size=11,
                        background_bank_size=13, nn_bank_size=5, entropy_split="one_cut", diffeomorphism="rms_cells")
    method = MonaFinetune(4, config)
    contrast = method.contrast
    assert (contrast.num_queries, contrast.num_negatives, contrast.temperature, contrast.entropy_split) == (
        7, 9, 0.2, "one_cut")
    assert [q.size for q in method.negative_bank.queues] == [13, 11, 11, 11] and method.nn_bank.size == 5
    assert method.nearest.topk == 3 and method.strong.diffeomorphism == "rms_cells"
    pretrain = MonaPretrain(4, MonaConfig(tau_student=0.2, tau_teacher=0.02))
    assert (pretrain.distill.tau_student, pretrain.distill.tau_teacher) == (0.2, 0.02)


def test_unsup_weights_each_image_by_its_share_of_confident_pixels():
    method = MonaFinetune(4, MonaConfig())
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 4, 5, generator=generator)
    pseudo = torch.randint(0, 4, (3, 4, 5), generator=generator)
    confidence = torch.rand(3, 4, 5, generator=generator) * 0.1 + 0.9  # some >= 0.97, some below
    confidence[0] = 1.0
    expected = 0.0
    for b in range(3):
        pixels = [(y, x) for y in range(4) for x in range(5)]
        ce = [math.log(sum(math.exp(v) for v in logits[b, :, y, x].tolist())) - float(logits[b, pseudo[b, y, x], y, x])
              for y, x in pixels]
        share = sum(float(confidence[b, y, x]) >= 0.97 for y, x in pixels) / len(pixels)
        expected += sum(ce) / len(ce) * share / 3
    assert 0 < float((confidence[1:] >= 0.97).float().mean()) < 1
    assert float(method._unsup(logits, pseudo, confidence)) == pytest.approx(expected, rel=1e-5)


class _Pointwise(nn.Module):
    """A toy segmenter: logits from each pixel alone (a 1x1 conv), or from 3x3 neighbourhoods."""

    def __init__(self, kernel: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel, padding=kernel // 2)
        nn.init.normal_(self.conv.weight, std=3.0)

    def forward(self, x):
        return SimpleNamespace(logits=self.conv(x))


def _pixel_permutation(generator, batch, size, device, **warp_settings):
    """A random mirror / transpose per image, sampling exactly at pixel centres (size a power of 2)."""
    grid = identity_grid(batch, size, device).clone()
    for b in range(batch):
        flips = torch.randint(0, 2, (3,), generator=generator).tolist()
        if flips[0]:
            grid[b] = grid[b].flip(1).clone()
        if flips[1]:
            grid[b] = grid[b].flip(0).clone()
        if flips[2]:
            grid[b] = grid[b].transpose(0, 1).clone()
    return Warp(grid)


@pytest.mark.parametrize("kernel, equivariant", [(1, True), (3, False)])
def test_eqv_is_zero_for_an_exactly_equivariant_model(monkeypatch, kernel, equivariant):
    monkeypatch.setattr(mona_module, "photometric_view", lambda images, generator: images)  # photometric off
    monkeypatch.setattr(mona_module, "random_equivariance_warp", _pixel_permutation)
    method = MonaFinetune(4, MonaConfig(eqv_pixels="confident"))
    method.model = _Pointwise(kernel)
    images = torch.rand(4, 1, 32, 32)
    loss = method._equivariance(images, torch.ones(4, 32, 32, dtype=torch.long), torch.ones(4, 32, 32),
                                torch.Generator().manual_seed(1))
    # a pointwise model commutes with a pixel permutation: KL(W(softmax f(x)) || softmax f(W x)) = 0
    assert (loss.item() < 1e-6) == equivariant and (loss.item() > 1e-3) != equivariant


def _spy(monkeypatch, target, name, record):
    """Record (args, output) of every call of `target.name` (a module's forward) under `name`."""
    if isinstance(getattr(target, name), nn.Module):
        target, name, key = getattr(target, name), "forward", name
    else:
        key = name
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        record.setdefault(key, []).append((args, out))
        return out

    monkeypatch.setattr(target, name, wrapper)


def _batches(seed=0, size=32):
    generator = torch.Generator().manual_seed(seed)
    labeled = {"image": torch.rand(2, 1, size, size, generator=generator),
               "label": torch.randint(0, 4, (2, size, size), generator=generator)}
    return labeled, {"image": torch.rand(2, 1, size, size, generator=generator)}


@pytest.mark.parametrize("eqv_labeled", [True, False])
def test_unsup_and_eqv_targets_are_the_warped_pseudo_labels_and_confidences(monkeypatch, eqv_labeled):
    torch.manual_seed(0)
    config = MonaConfig(eqv_labeled=eqv_labeled, eqv_confidence=0.3, tailness=False, diversity=False)
    method = MonaFinetune(4, config)
    method.strong.deform_p = 1.0
    record = {}
    for target, name in ((mona_module, "weak_views"), (mona_module, "random_equivariance_warp"),
                         (method, "strong"), (method, "_unsup"), (method, "equivariance")):
        _spy(monkeypatch, target, name, record)
    teacher_out = []
    method.teacher.register_forward_hook(lambda module, args, out: teacher_out.append(out.logits))
    method.step(*_batches(), 0.0, torch.Generator().manual_seed(3))

    (_, (images_l, labels_l, images_u)), = record["weak_views"]
    probs = torch.softmax(teacher_out[0].float(), dim=1)  # the teacher on the weak unlabeled view
    (strong_in, strong_out), = record["strong"]
    assert torch.equal(strong_in[0], images_u)
    assert torch.equal(strong_in[1], probs.argmax(dim=1)) and torch.equal(strong_in[2], probs.amax(dim=1))
    (unsup_in, _), = record["_unsup"]
    assert unsup_in[1] is strong_out[1] and unsup_in[2] is strong_out[2]  # L_unsup: CutMixed and deformed
    assert not torch.equal(strong_out[1], strong_in[1])

    (_, warp), = record["random_equivariance_warp"]
    (eqv_in, _), = record["equivariance"]
    if eqv_labeled:  # the labeled slices count with their truth, confidence 1
        labels = torch.cat([labels_l, strong_in[1]])
        confidence = torch.cat([torch.ones_like(strong_in[2][:2]), strong_in[2]])
    else:
        labels, confidence = strong_in[1], strong_in[2]
    expected = (warp(confidence) >= 0.3) & warp.inside & (warp(labels) != 0)
    assert torch.equal(eqv_in[2], expected)
    assert eqv_in[0].shape[0] == (4 if eqv_labeled else 2)
    assert expected[-2:].any() and not expected[-2:].all()
    if eqv_labeled:
        assert torch.equal(expected[:2], warp.inside[:2] & (warp(labels)[:2] != 0))  # confidence 1: truth decides


def test_stage1_student_sees_the_unjittered_view():
    torch.manual_seed(0)
    method = MonaPretrain(4, MonaConfig(patch_size=16, patch_stride=16), image_size=32)
    seen = {}
    method.model.register_forward_pre_hook(lambda module, args: seen.setdefault("student", args[0]))
    method.teacher.register_forward_pre_hook(lambda module, args: seen.setdefault("teacher", args[0]))
    labeled, unlabeled = _batches(1)
    method.step(labeled, unlabeled, 0.0, torch.Generator().manual_seed(5))

    generator = torch.Generator().manual_seed(5)
    images_l, _, images_u = weak_views(labeled, unlabeled, generator)
    weak = torch.cat([images_l, images_u])
    assert torch.equal(seen["student"], weak)  # weak augmentation only (spec defect 4: never jittered in place)
    assert torch.equal(seen["teacher"], photometric_view(weak, generator))
    assert not torch.equal(seen["teacher"], weak)


def test_representation_stride_above_one_trains_at_the_coarser_grid(monkeypatch):
    torch.manual_seed(0)
    config = MonaConfig(representation_stride=4, num_queries=8, num_negatives=8, bank_size=64,
                        background_bank_size=64)
    method = MonaFinetune(4, config)
    record = {}
    _spy(monkeypatch, method, "contrast", record)
    method.nn_bank.push(torch.randn(4, config.embed_dim))
    for step in range(2):  # the first step fills the banks, the second contrasts against them
        losses = method.step(*_batches(step), 0.1, torch.Generator().manual_seed(step))
    (args, _) = record["contrast"][-1]
    student, teacher, labels, probs = args[:4]
    assert student.shape == teacher.shape == (4, config.embed_dim, 8, 8)
    assert labels.shape == (4, 8, 8) and probs.shape == (4, 4, 8, 8)
    assert float(losses["contrast"]) > 0 and sum(method.negative_bank.filled(c) for c in range(4)) > 0
    losses["loss"].backward()
    assert method.rep_head.project[0].weight.grad.abs().sum() > 0


def test_contrast_reads_the_student_and_teacher_embeddings_the_right_way_round(monkeypatch):
    """L_contrast gets (student embeddings with their gradient, the teacher head's on the teacher's
    pass over the same input); L_nn's bank is filled from the teacher, its query is the student's."""
    torch.manual_seed(0)
    config = MonaConfig(num_queries=8, num_negatives=8, bank_size=64, background_bank_size=64, consistency=False,
                        confidence_threshold=0.3)
    method = MonaFinetune(4, config)
    record = {}
    for target, name in ((method, "rep_head"), (method, "teacher_rep_head"), (method, "contrast"),
                         (method.nn_bank, "push"), (method, "nearest")):
        _spy(monkeypatch, target, name, record)
    teacher_inputs = []
    method.teacher.register_forward_pre_hook(lambda module, args: teacher_inputs.append(args[0]))
    student_inputs = []
    method.model.register_forward_pre_hook(lambda module, args: student_inputs.append(args[0]))
    method.step(*_batches(), 0.5, torch.Generator().manual_seed(3))

    (_, student_embeddings), = record["rep_head"]
    (_, teacher_all), (_, teacher_unlabeled) = record["teacher_rep_head"]
    (contrast_args, _), = record["contrast"]
    assert contrast_args[0] is student_embeddings and student_embeddings.requires_grad
    assert contrast_args[1] is teacher_all and not teacher_all.requires_grad
    assert torch.equal(teacher_inputs[1], student_inputs[0])  # the teacher's pass over the student's input
    (pushed, _), = record["push"]
    assert torch.equal(pushed[0], teacher_unlabeled.float().mean((2, 3)))  # teacher vectors of the weak view
    (nn_args, _), = record["nearest"]
    assert torch.equal(nn_args[0], student_embeddings[2:].float().mean((2, 3))) and nn_args[0].requires_grad


def test_stage1_queues_are_filled_from_the_teacher(monkeypatch):
    torch.manual_seed(0)
    method = MonaPretrain(4, MonaConfig(patch_size=16, patch_stride=16), image_size=32)
    record = {}
    for target, name in ((method, "teacher_global_head"), (method, "teacher_local_head"), (method, "global_head"),
                         (method.global_queue, "push"), (method.local_queue, "push")):
        _spy(monkeypatch, target, name, record)
    method.step(*_batches(1), 0.0, torch.Generator().manual_seed(0))
    (_, teacher_global), = record["teacher_global_head"]
    (_, teacher_local), = record["teacher_local_head"]
    global_push, local_push = record["push"]  # global queue first, then local
    assert global_push[0][0] is teacher_global and not teacher_global.requires_grad
    assert torch.equal(local_push[0][0], teacher_local.flatten(1)) and not local_push[0][0].requires_grad
