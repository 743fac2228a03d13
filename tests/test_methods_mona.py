"""MONA on the shared engine: both stages train, learn, resume exactly, and every switch acts."""

import json
from pathlib import Path

import pytest
import torch

from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine.run import evaluate_run, resume_config, train
from mona.errors import RunInterrupted
from mona.methods.mona import MonaFinetune, MonaPretrain

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("mona") / "ds", patients=5, size=(32, 32), slices=(4, 5))


def make_config(phantom, out, *overrides):
    return load_config([], [
        f"data.root={phantom}", f"out={out}", "method=mona", "data.labeled=1", "data.image_size=32",
        "train.device=cpu", "train.progress=false", "train.channels_last=false", "train.log_every=1",
        "mona.pretrain_batch_labeled=2", "mona.pretrain_batch_unlabeled=2", "mona.finetune_batch_labeled=2",
        "mona.finetune_batch_unlabeled=2", "mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=16",
        "mona.num_negatives=16", "mona.bank_size=256", "mona.background_bank_size=256",
        "mona.confidence_threshold=0.3", "mona.eqv_confidence=0.3", *overrides,
    ])


def read_log(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def test_both_stages_run_and_are_scored(phantom, tmp_path):
    run = tmp_path / "run"
    train(make_config(phantom, run, "mona.pretrain_iterations=3", "train.iterations=4", "train.val_every=2"))
    pretrain, finetune = read_log(run / "pretrain"), read_log(run / "finetune")
    assert [r["iteration"] for r in pretrain] == [1, 2, 3] and len(finetune) == 4
    assert {"sup", "global", "local"} <= pretrain[0].keys()
    assert {"sup", "unsup", "contrast", "eqv", "nn"} <= finetune[-1].keys()
    assert finetune[-1]["contrast"] > 0 and finetune[-1]["nn"] > 0
    summary = evaluate_run(run, "test")
    assert summary["cases"] > 0 and 0.0 <= summary["mean"]["dice"] <= 1.0
    memories_of = {"pretrain": ("global_queue.", "local_queue."), "finetune": ("negative_bank.", "nn_bank.")}
    for stage, memories in memories_of.items():
        best = torch.load(run / stage / "best.pt", weights_only=True)
        last = torch.load(run / stage / "last.pt", weights_only=True)
        kept = {key for key in last["method"] if not key.startswith(memories)}
        assert set(best["method"]) == kept and kept != set(last["method"])  # every network, no memory
        assert not best["optimizer"] and last["optimizer"]  # best.pt is not a resume point
        assert best["num_classes"] == last["num_classes"] and best["image_size"] == last["image_size"]


def test_finetune_starts_from_the_stage1_student(phantom, tmp_path):
    run = tmp_path / "run"
    train(make_config(phantom, run, "mona.stage=pretrain", "mona.pretrain_iterations=2", "train.val_every=2"))
    assert not (run / "finetune").exists()
    stage1 = torch.load(run / "pretrain" / "last.pt", weights_only=True)["method"]
    captured = {}
    original = MonaFinetune.training_step

    def capture(self, *args):
        if not captured:
            captured.update({k: v.clone() for k, v in self.model.state_dict().items()})
            captured.update({f"teacher.{k}": v.clone() for k, v in self.teacher.state_dict().items()})
        return original(self, *args)

    other = tmp_path / "other"
    MonaFinetune.training_step = capture
    try:
        train(make_config(phantom, other, "mona.stage=finetune", f"mona.init_from={run}", "train.iterations=1",
                          "train.val_every=1"))
    finally:
        MonaFinetune.training_step = original
    for key, value in stage1.items():
        if key.startswith("model.") and value.is_floating_point():
            assert torch.equal(captured[key[len("model."):]], value), key
            assert torch.equal(captured[f"teacher.{key[len('model.'):]}"], value), key


def test_finetune_loss_falls(phantom, tmp_path):
    run = tmp_path / "run"
    train(make_config(phantom, run, "mona.pretrain=false", "train.iterations=40", "train.val_every=40"))
    log = read_log(run / "finetune")
    assert sum(r["sup"] for r in log[-5:]) < sum(r["sup"] for r in log[:5])


def test_switches_remove_their_losses(phantom, tmp_path):
    run = tmp_path / "run"
    train(make_config(phantom, run, "mona.pretrain=false", "mona.tailness=false", "mona.consistency=false",
                      "mona.diversity=false", "mona.strong_aug=false", "train.iterations=2", "train.val_every=2"))
    assert set(read_log(run / "finetune")[-1]) == {"iteration", "split", "loss", "sup", "unsup", "lr",
                                                     "sec_per_iter", "data_wait"}
    assert not (run / "pretrain").exists()


@pytest.fixture(scope="module")
def straight_mona(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(make_config(phantom, out, *TWO_STAGES))
    return out


TWO_STAGES = ("mona.pretrain_iterations=2", "train.iterations=4", "train.val_every=2")


def assert_same_finetune(a_dir, b_dir):
    a = torch.load(a_dir / "finetune" / "last.pt", weights_only=True)
    b = torch.load(b_dir / "finetune" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    assert any("negative_bank" in k for k in a["method"]) and any("nn_bank" in k for k in a["method"])
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key


@pytest.mark.parametrize("method_class, stop, at_once", [
    (MonaFinetune, 3, False),  # Ctrl-C inside stage 2
    (MonaPretrain, 1, False),  # Ctrl-C in stage 1's last step: stage 1 saved as finished, stage 2 not begun
    (MonaFinetune, 0, True),  # a hard stop in stage 2's first step: stage 2 restarts from stage 1's student
])
def test_resume_equals_uninterrupted_across_stages(phantom, tmp_path, interrupt_at, straight_mona, method_class,
                                                   stop, at_once):
    interrupted = tmp_path / "interrupted"
    with interrupt_at(method_class, 4 if method_class is MonaFinetune else 2, stop, at_once), \
            pytest.raises(RunInterrupted) as info:
        train(make_config(phantom, interrupted, *TWO_STAGES))
    assert str(info.value).endswith(f"Continue with: mona train --resume {interrupted}")
    train(resume_config(interrupted / "pretrain"), resume=True)  # a stage folder maps to its run
    assert not (interrupted / "pretrain" / "pretrain").exists()
    assert_same_finetune(straight_mona, interrupted)


@pytest.mark.parametrize("local_queue_size, expected_local", [(0, 16), (4, 4)])
def test_pretrain_queues_fill_in_fifo_order(local_queue_size, expected_local):
    from mona.config import MonaConfig

    config = MonaConfig(queue_size=4, local_queue_size=local_queue_size, patch_size=16, patch_stride=16)
    method = MonaPretrain(4, config, image_size=32)
    # 0 (spec reading): 4 images' worth of 2x2 patches = 16; 4 (the earlier reading): 4 patches
    assert method.local_queue.size == expected_local
    generator = torch.Generator().manual_seed(0)
    labeled = {"image": torch.rand(2, 1, 32, 32), "label": torch.randint(0, 4, (2, 32, 32))}
    unlabeled = {"image": torch.rand(2, 1, 32, 32)}
    method.step(labeled, unlabeled, 0.0, generator)
    assert len(method.global_queue) == 4 and len(method.local_queue) == expected_local  # 4 images, 16 patches
    losses = method.step(labeled, unlabeled, 0.5, generator)
    losses["loss"].backward()
    assert method.global_head[0].weight.grad is not None and method.local_head[0].weight.grad is not None
    assert all(p.grad is None for p in method.teacher.parameters())


def test_local_queue_holds_the_patches_of_as_many_images_as_the_global_queue():
    from mona.config import MonaConfig, load_config
    from mona.methods.mona import stages

    assert MonaPretrain(4, MonaConfig()).local_queue.size == 36 * 49  # 256 px: 7 x 7 patches of 64, stride 32
    config = load_config(["cpu-small"], ["method=mona"])
    stage1 = stages(config)[0].build(4)
    assert stage1.local_queue.size == 36 * 9  # 128 px: 3 x 3 patches


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.5])
def test_rampup_scales_only_the_unlabeled_losses(progress):
    from mona.config import MonaConfig
    from mona.methods.base import sigmoid_rampup

    config = MonaConfig(rampup=0.2, num_queries=8, num_negatives=8, bank_size=64, background_bank_size=64,
                        confidence_threshold=0.0, eqv_confidence=0.0)
    method = MonaFinetune(4, config)
    torch.manual_seed(0)
    labeled = {"image": torch.rand(2, 1, 32, 32), "label": torch.randint(0, 4, (2, 32, 32))}
    unlabeled = {"image": torch.rand(2, 1, 32, 32)}
    method.nn_bank.push(torch.randn(8, config.embed_dim))
    losses = method.step(labeled, unlabeled, progress, torch.Generator().manual_seed(0))
    extra = (config.unsup_weight * losses["unsup"] + config.contrast_weight * losses["contrast"]
             + config.eqv_weight * losses["eqv"] + config.nn_weight * losses["nn"])
    assert extra > 0
    expected = losses["sup"] + sigmoid_rampup(progress, 0.2) * extra
    assert torch.allclose(losses["loss"].detach(), expected, rtol=1e-5)


def test_equivariance_forwards_leave_batchnorm_statistics_alone():
    from mona.config import MonaConfig

    method = MonaFinetune(4, MonaConfig(eqv_confidence=0.0))
    norms = [m for m in method.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [n.running_mean.clone() for n in norms]
    images = torch.rand(2, 1, 32, 32)
    pseudo = torch.randint(1, 4, (2, 32, 32))
    loss = method._equivariance(images, pseudo, torch.ones(2, 32, 32), torch.Generator().manual_seed(0))
    loss.backward()
    assert loss > 0 and method.model.head.weight.grad.abs().sum() > 0
    assert all(torch.equal(n.running_mean, mean) for n, mean in zip(norms, before))


@pytest.mark.parametrize("pixels, expect_loss", [("foreground", False), ("confident", True), ("balanced", True)])
def test_eqv_pixels_decides_whether_background_counts(pixels, expect_loss):
    from mona.config import MonaConfig

    method = MonaFinetune(4, MonaConfig(eqv_pixels=pixels))
    torch.manual_seed(0)
    background = torch.zeros(2, 32, 32, dtype=torch.long)
    loss = method._equivariance(torch.rand(2, 1, 32, 32), background, torch.ones(2, 32, 32),
                                torch.Generator().manual_seed(0))
    assert (loss > 0) == expect_loss


def test_balanced_eqv_weighs_each_class_alike(monkeypatch):
    """`eqv_pixels=balanced` passes the warped labels to L_eqv, which then averages per class."""
    from mona.config import MonaConfig

    seen = {}

    def record(target, prediction, mask, classes=None):
        seen.update(mask=mask, classes=classes)
        return prediction.sum() * 0.0

    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 12:20, 12:20] = 2
    for pixels in ("confident", "balanced"):
        method = MonaFinetune(4, MonaConfig(eqv_pixels=pixels))
        monkeypatch.setattr(method.equivariance, "forward", record)
        method._equivariance(torch.rand(2, 1, 32, 32), labels, torch.ones(2, 32, 32), torch.Generator().manual_seed(0))
        if pixels == "confident":
            assert seen["classes"] is None
            confident_mask = seen["mask"]
    assert torch.equal(seen["mask"], confident_mask)  # the same pixels, the same warp
    assert set(seen["classes"][seen["mask"]].unique().tolist()) == {0, 2}  # the warped labels, per pixel


CLI_TINY = ["--device", "cpu", "--no-progress", "--labeled", "1", "--iterations", "2", "mona.pretrain_iterations=2",
            "train.val_every=1", "data.image_size=32", "train.channels_last=false", "mona.pretrain_batch_labeled=2",
            "mona.pretrain_batch_unlabeled=2", "mona.finetune_batch_labeled=2", "mona.finetune_batch_unlabeled=2",
            "mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=16", "mona.num_negatives=16",
            "mona.bank_size=256", "mona.background_bank_size=256"]


def cli_train(phantom, run, *extra):
    from mona.cli.main import main

    return main(["train", "--data", str(phantom), "--out", str(run), "--method", "mona", *CLI_TINY, *extra])


@pytest.fixture(scope="module")
def cli_run(phantom, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli-mona") / "run"
    assert cli_train(phantom, run) == 0
    return run


def test_the_run_says_what_each_stage_trains_and_what_its_val_scores(cli_run):
    """#46.4 and #46.8: --iterations sets stage 2; stage 1 runs mona.pretrain_iterations, and the run says so.
    Stage 1's val Dice is its student's segmentation of the val volumes: scoring pretrain/best.pt gives it."""
    log = (cli_run / "train.log").read_text()
    assert ("stages: pretrain 2 iterations, then finetune 2 iterations; each stage's val Dice scores its student's "
            "segmentation of the val volumes (0 while it predicts only background)") in log
    best = torch.load(cli_run / "pretrain" / "best.pt", weights_only=True)["metrics"]["best"]
    scored = evaluate_run(cli_run, "val", str(cli_run / "pretrain" / "best.pt"), "cpu")
    assert scored["iteration"] == best["iteration"] and scored["mean"]["dice"] == pytest.approx(best["dice"])


def test_iterations_help_says_it_sets_stage_two(capsys):
    from mona.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("cpu- small", "cpu-small")  # argparse wraps at "-"
    assert ("--iterations N training iterations (train.iterations); MONA: of stage 2 only, stage 1 runs "
            "mona.pretrain_iterations (cpu-small: 1000; 0 = as many as stage 2)") in text


def test_a_resumed_run_records_its_new_stage_lengths(cli_run, tmp_path):
    """#46.4: `--resume RUN mona.pretrain_iterations=3` trains stage 1 on to 3, and stages.json says 3."""
    import shutil

    from mona.engine.run_folder import read_stages

    run = shutil.copytree(cli_run, tmp_path / "run")
    assert read_stages(run) == [{"name": "pretrain", "iterations": 2}, {"name": "finetune", "iterations": 2}]
    from mona.cli.main import main

    assert main(["train", "--resume", str(run), "mona.pretrain_iterations=3", "--no-progress"]) == 0
    assert read_stages(run) == [{"name": "pretrain", "iterations": 3}, {"name": "finetune", "iterations": 2}]
    assert torch.load(run / "pretrain" / "last.pt", weights_only=True)["iteration"] == 3


def test_a_better_earlier_stage_is_named_at_the_end(phantom, tmp_path, monkeypatch):
    """#46.7: when stage 1's best val Dice is above stage 2's, the end of training says so and how to use it."""
    from mona.engine import trainer

    def validate(method, volumes, config, device, amp):
        return {"dice": 0.785 if method.name == "mona_pretrain" else 0.645}

    monkeypatch.setattr(trainer, "validate", validate)
    run = tmp_path / "run"
    assert cli_train(phantom, run) == 0
    lines = (run / "train.log").read_text().splitlines()
    done = next(i for i, line in enumerate(lines) if " done: " in line)
    assert lines[done + 1].split(" ", 2)[2] == (
        "note: stage pretrain's best val Dice 0.7850 (iteration 1) is above stage finetune's 0.6450; predict and "
        f"evaluate use finetune/best.pt, the last stage's; for stage pretrain's: mona predict --checkpoint "
        f"{run / 'pretrain' / 'best.pt'}")
