"""The trainer on the phantom: a supervised run whose loss falls, its run folder, incompatible
checkpoints, Ctrl-C and resume == uninterrupted, periodic checkpoints, bf16."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine import trainer as trainer_module
from mona.engine.checkpoint import save_checkpoint
from mona.engine.run import load_run_model, resume_config, train
from mona.errors import MonaError, RunInterrupted
from mona.methods import METHODS, method_stages
from mona.methods.mean_teacher import MeanTeacher

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("engine") / "ds", patients=5, size=(32, 32), slices=(4, 5))


def make_config(phantom, out, *overrides):
    return load_config([], [
        f"data.root={phantom}", f"out={out}", "data.labeled=1", "data.image_size=32",
        "data.batch_labeled=2", "data.batch_unlabeled=2", "train.device=cpu", "train.progress=false",
        "train.channels_last=false", *overrides,
    ])


def read_log(run_dir, split="train"):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def supervised_run(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("sup") / "run"
    config = make_config(phantom, out, "method=supervised", "data.batch_labeled=4", "train.iterations=30",
                         "train.log_every=5", "train.val_every=15", "optim.lr=0.05")
    result = train(config)
    return out, result


def test_supervised_loss_falls(supervised_run):
    out, result = supervised_run
    log = read_log(out)
    assert [r["iteration"] for r in log] == [5, 10, 15, 20, 25, 30]
    assert all({"loss", "sup", "lr"} <= set(r) for r in log)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [r["loss"] for r in log]
    assert log[-1]["lr"] < log[0]["lr"]  # poly schedule
    val = read_log(out, "val")
    assert [r["iteration"] for r in val] == [15, 30] and all(0 <= r["dice"] <= 1 for r in val)
    assert result["best"]["dice"] == max(r["dice"] for r in val)


def test_run_folder_and_checkpoints(supervised_run):
    out, _ = supervised_run
    assert {"config.yaml", "metrics.jsonl", "best.pt", "last.pt"} <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    for name in ("best.pt", "last.pt"):
        state = torch.load(out / name, weights_only=True)
        assert state["num_classes"] == 4 and state["image_size"] == 32
        assert state["class_names"] == ["background", "RV", "Myo", "LV"]
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 30
    model, state = load_run_model(out, "last")
    assert model(torch.rand(1, 1, 32, 32)).logits.shape == (1, 4, 32, 32)
    assert resume_config(out).train.iterations == 30


def test_incompatible_checkpoint_is_a_mona_error(supervised_run, tmp_path):
    out = Path(shutil.copytree(supervised_run[0], tmp_path / "run"))
    state = torch.load(out / "last.pt", weights_only=True)
    state["method"] = {k: v[:2] if k == "model.head.weight" else v for k, v in state["method"].items()}
    state["iteration"] = 10
    save_checkpoint(out / "last.pt", state)
    with pytest.raises(MonaError, match="does not fit") as info:
        train(resume_config(out), resume=True)
    assert info.value.path == str(out / "last.pt")


def test_resume_without_a_run_folder(tmp_path):
    with pytest.raises(MonaError, match="not a run folder"):
        resume_config(tmp_path)


def final_state(run_dir):
    return torch.load(Path(run_dir) / "last.pt", weights_only=True)


def assert_same_training(a, b):
    assert a["iteration"] == b["iteration"]
    assert a["method"].keys() == b["method"].keys()
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["metrics"]["best"] == b["metrics"]["best"]


@pytest.fixture(scope="module")
def straight_mean_teacher(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(make_config(phantom, out, *MEAN_TEACHER_RUN))
    return out


MEAN_TEACHER_RUN = ("method=mean_teacher", "train.iterations=6", "train.val_every=3", "train.log_every=1")


def test_ctrl_c_saves_the_step_and_resume_equals_uninterrupted(phantom, tmp_path, interrupt_at,
                                                                straight_mean_teacher):
    interrupted = tmp_path / "interrupted"
    with interrupt_at(MeanTeacher, 6, 4) as calls, \
            pytest.raises(RunInterrupted, match="stopped at iteration 5") as info:
        train(make_config(phantom, interrupted, *MEAN_TEACHER_RUN))
    assert calls == [0, 1, 2, 3, 4]  # the step under way when Ctrl-C came is finished, then saved
    assert info.value.exit_code == 130 and f"mona train --resume {interrupted}" in str(info.value)
    assert final_state(interrupted)["iteration"] == 5
    assert not (interrupted / ".lock").exists()

    train(resume_config(interrupted), resume=True)
    a, b = final_state(straight_mean_teacher), final_state(interrupted)
    assert a["iteration"] == 6 and any(k.startswith("teacher.") for k in a["method"])
    assert_same_training(a, b)
    log_a, log_b = read_log(straight_mean_teacher), read_log(interrupted)
    assert [r["iteration"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert "resumed at iteration 5/6" in (interrupted / "train.log").read_text()


def test_second_ctrl_c_keeps_the_last_checkpoint_and_resume_still_equals(phantom, tmp_path, interrupt_at,
                                                                          straight_mean_teacher):
    interrupted = tmp_path / "interrupted"
    with interrupt_at(MeanTeacher, 6, 4, at_once=True), pytest.raises(RunInterrupted, match="from iteration 3"):
        train(make_config(phantom, interrupted, *MEAN_TEACHER_RUN))
    assert final_state(interrupted)["iteration"] == 3
    assert [r["iteration"] for r in read_log(interrupted)] == [1, 2, 3, 4]  # 4 was logged after the checkpoint
    train(resume_config(interrupted), resume=True)
    assert_same_training(final_state(straight_mean_teacher), final_state(interrupted))
    assert [r["iteration"] for r in read_log(interrupted)] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_before_any_checkpoint_says_to_start_again(phantom, tmp_path, interrupt_at):
    out = tmp_path / "run"
    with interrupt_at(MeanTeacher, 6, 1, at_once=True), pytest.raises(RunInterrupted, match="--overwrite"):
        train(make_config(phantom, out, *MEAN_TEACHER_RUN))
    assert not (out / "last.pt").exists()


def test_checkpoint_every_saves_between_validations(phantom, tmp_path):
    out = tmp_path / "run"
    saved = []
    real_save = trainer_module.save_checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "save_checkpoint", lambda path, state: saved.append(
            (path.name, state["iteration"])) or real_save(path, state))
        train(make_config(phantom, out, "method=supervised", "train.iterations=4", "train.val_every=4",
                          "train.checkpoint_every=0"))
    assert saved == [("last.pt", 1), ("last.pt", 2), ("last.pt", 3), ("best.pt", 4), ("last.pt", 4)]


def test_torn_last_log_line_is_dropped_on_resume(phantom, tmp_path, interrupt_at, capsys):
    out = tmp_path / "run"
    with interrupt_at(MeanTeacher, 6, 3), pytest.raises(RunInterrupted):
        train(make_config(phantom, out, *MEAN_TEACHER_RUN))
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 5, "split": "tr')  # kill -9 in the middle of an append
    train(resume_config(out), resume=True)
    assert [r["iteration"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]
    assert "dropped a torn last line" in capsys.readouterr().out


def test_bf16_training_runs_in_bf16_and_learns(phantom, tmp_path, monkeypatch):
    """bf16 autocast on the CPU (forced on, as on a CPU with native bf16): finite, falling losses."""
    from mona.engine import trainer
    from mona.models.unet import UNet

    monkeypatch.setattr(trainer, "fast_bf16", lambda device: True)
    dtypes = []
    original = UNet.forward

    def spy(self, x):
        output = original(self, x)
        dtypes.append(output.logits.dtype)
        return output

    monkeypatch.setattr(UNet, "forward", spy)
    out = tmp_path / "bf16"
    train(make_config(phantom, out, "method=supervised", "train.amp=true", "train.iterations=20",
                      "train.val_every=20", "train.log_every=5", "optim.lr=0.05"))
    log = read_log(out)
    assert torch.bfloat16 in dtypes
    assert all(math.isfinite(r["loss"]) for r in log)
    assert log[-1]["loss"] < log[0]["loss"], [r["loss"] for r in log]


@pytest.mark.parametrize("flags, vendor, expected", [
    ([], "AuthenticAMD", False), (["avx2", "avx512f"], "AuthenticAMD", False),  # bf16 emulated
    (["avx512_bf16"], "AuthenticAMD", True), (["avx512_bf16"], "GenuineIntel", False),  # Intel without AMX: slower
    (["avx512_bf16", "amx_bf16"], "GenuineIntel", True),
])
def test_cpu_bf16_where_it_was_measured_faster(monkeypatch, flags, vendor, expected):
    monkeypatch.setattr(trainer_module, "cpu_flags", lambda: flags)
    monkeypatch.setattr(trainer_module, "cpu_vendor", lambda: vendor)
    assert trainer_module.fast_bf16(torch.device("cpu")) is expected


# Each method with an EMA teacher: its config key for the decay, and whether the engine warms the decay up
# (min(1 - 1/(t + 1), m): SSL4MIS's mean teacher, MONA) or applies it from the first step (BCP, ABD).
EMA_RULES = {"mean_teacher": ("mean_teacher.ema", True), "mona": ("mona.ema", True), "bcp": ("bcp.ema", False),
             "abd": ("abd.ema", False)}
TINY = ["mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=8", "mona.num_negatives=8",
        "mona.bank_size=64", "mona.background_bank_size=64", "abd.patch_grid=4"]


@pytest.mark.parametrize("method_name", list(METHODS))
def test_the_trainer_updates_every_teacher_with_the_configured_decay(method_name, phantom, tmp_path, monkeypatch):
    """After every step, teacher = m * teacher + (1 - m) * student for each (teacher, student) pair, with
    m the configured decay (0.9 here), warmed up or not as the method's code does; no other update."""
    key, warmup = EMA_RULES.get(method_name, (None, None))
    config = make_config(phantom, tmp_path / "run", f"method={method_name}", "train.iterations=3",
                         "train.val_every=3", "mona.pretrain_iterations=3", "bcp.pretrain_iterations=2",
                         "abd.pretrain_iterations=2", *TINY, *([f"{key}=0.9"] if key else []))
    original = trainer_module.ema_update
    calls = []

    def checked(teacher, student, momentum):
        before = [t.detach().clone() for t in teacher.parameters()]
        original(teacher, student, momentum)
        steps = sum(1 for c in calls if c[0] is teacher)
        expected = min(1 - 1 / (steps + 1), 0.9) if warmup else 0.9
        assert momentum == pytest.approx(expected), (method_name, steps)
        for old, new, s in zip(before, teacher.parameters(), student.parameters()):
            assert torch.allclose(new, expected * old + (1 - expected) * s.detach(), atol=1e-6)
        calls.append((teacher, momentum))

    monkeypatch.setattr(trainer_module, "ema_update", checked)
    train(config)
    stages = method_stages(config)
    teachers = sum(stage.iterations * len(stage.build(4).ema_pairs()) for stage in stages)
    assert len(calls) == teachers
    assert (teachers > 0) == (key is not None), f"{method_name}: add its EMA rule to EMA_RULES"


def test_constant_lr_stages_keep_the_base_rate(phantom, tmp_path):
    out = tmp_path / "bcp"
    train(make_config(phantom, out, "method=bcp", "train.iterations=4", "bcp.pretrain_iterations=2",
                      "train.log_every=1", "train.val_every=2", "optim.lr=0.02"))
    for stage in ("pretrain", "selftrain"):
        assert {r["lr"] for r in read_log(out / stage)} == {0.02}


def test_the_loop_reads_the_losses_on_the_host_at_logging_steps_only(phantom, tmp_path, host_reads, monkeypatch):
    """Between logging steps the trainer's own work (batches, backward, SGD, EMA, the loss window) never
    waits for the device; the logging step reads the window once (see `HostReads` in conftest.py)."""
    reads = host_reads(exempt=("_check_async",))
    for owner, name in [(trainer_module.Trainer, "_batches"), (trainer_module.Trainer, "_train_step"),
                        (trainer_module.Trainer, "_update_teachers"), (trainer_module.LossWindow, "add")]:
        original = getattr(owner, name)

        def watched(self, *args, _original=original, **kwargs):
            with reads:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, watched)
    train(make_config(phantom, tmp_path / "run", "method=mean_teacher", "train.iterations=4", "train.log_every=4"))
    assert reads.found == []
