"""The engine: schedules, EMA, atomic checkpoints, resume == uninterrupted, incompatible
checkpoints, and a supervised run whose loss falls on the phantom."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine import trainer as trainer_module
from mona.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mona.engine.run import load_run_model, resume_config, train
from mona.engine.schedule import ema_momentum, ema_update, poly_lr
from mona.errors import MonaError, RunInterrupted
from mona.methods.base import sigmoid_rampup
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


# --- schedules -------------------------------------------------------------------------------

def test_poly_lr():
    assert poly_lr(0.01, 0.0) == pytest.approx(0.01)
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 0.9, power=2.0) == pytest.approx(0.01 * 0.1**2)
    assert poly_lr(0.01, 1.0) == 0.0 and poly_lr(0.01, 1.5) == 0.0
    values = [poly_lr(0.01, t / 10) for t in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def ssl4mis_weight(iteration, consistency=0.1, rampup_epochs=200.0):
    """SSL4MIS's train_mean_teacher_2D: consistency * sigmoid_rampup(iter_num // 150, 200)."""
    epoch = iteration // 150
    phase = 1.0 - min(max(epoch, 0.0), rampup_epochs) / rampup_epochs
    return consistency * math.exp(-5.0 * phase * phase)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0.0, 0.4) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(0.2, 0.4) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(0.4, 0.4) == 1.0
    assert sigmoid_rampup(0.7, 0.4) == 1.0
    assert sigmoid_rampup(0.1, 0.0) == 1.0
    values = [sigmoid_rampup(t / 20, 0.4) for t in range(9)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_rampup_scales_with_the_run_unlike_ssl4mis():
    # a 3000-iteration run at 40 %: our fractional ramp is done, SSL4MIS's (tuned for 30000) is near 0
    iteration, total = 1200, 3000
    assert 0.1 * sigmoid_rampup(iteration / total, 0.4) == pytest.approx(0.1)
    assert ssl4mis_weight(iteration) < 0.002
    # and over 30000 iterations the two agree at the end of the ramp
    assert ssl4mis_weight(30000) == pytest.approx(0.1 * sigmoid_rampup(1.0, 0.4))


# --- EMA -------------------------------------------------------------------------------------

def test_ema_momentum_warm_up():
    assert ema_momentum(0.99, 0) == 0.0
    assert ema_momentum(0.99, 9) == pytest.approx(0.9)
    assert ema_momentum(0.99, 1000) == 0.99


def test_ema_update_equals_the_formula():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student(torch.randn(8, 3))  # moves the student's running statistics and counter
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    ema_update(teacher, student, 0.9)
    after = teacher.state_dict()
    for key, value in after.items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * before_t[key] + 0.1 * before_s[key], atol=1e-7), key
        else:  # integer buffers (num_batches_tracked) are left alone
            assert torch.equal(value, before_t[key]), key
    assert all(torch.equal(v, before_s[k]) for k, v in student.state_dict().items())  # student untouched
    ema_update(teacher, student, 0.0)
    floats = {k: v for k, v in student.state_dict().items() if v.is_floating_point()}
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in floats.items())


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_written_atomically(tmp_path, monkeypatch):
    state = {"method": {"w": torch.arange(4.0)}, "iteration": 3}
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 3 and torch.equal(loaded["method"]["w"], torch.arange(4.0))
    assert torch.load(path, weights_only=True)["format"] == 1

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(MonaError, match="last.pt: cannot write \\(disk full\\)"):
        save_checkpoint(path, {"method": {"w": torch.zeros(4)}, "iteration": 9})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["iteration"] == 3  # the previous checkpoint is intact


def test_bad_checkpoints_are_mona_errors(tmp_path):
    with pytest.raises(MonaError, match="missing"):
        load_checkpoint(tmp_path / "none.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 20)
    with pytest.raises(MonaError, match="cannot read") as info:
        load_checkpoint(garbage)
    assert info.value.path == str(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(MonaError, match="not a mona checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("damage", ["truncated", "objects"])
def test_checkpoint_errors_do_not_relay_torch_advice(tmp_path, damage):
    path = tmp_path / "last.pt"
    if damage == "truncated":
        save_checkpoint(path, {"method": {"w": torch.zeros(1000)}, "iteration": 3})
        path.write_bytes(path.read_bytes()[:700])
    else:
        torch.save({"format": 1, "method": {}, "when": __import__("datetime").date.today()}, path)
    with pytest.raises(MonaError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read checkpoint: ") and "weights_only=False" not in message
    assert message.endswith(")") or message.endswith("checkpoint")


def test_load_weights_reports_mismatch(tmp_path):
    small, big = nn.Linear(3, 4), nn.Linear(3, 5)
    with pytest.raises(MonaError, match="weight has shape") as info:
        load_weights(big, small.state_dict(), tmp_path / "x.pt")
    assert info.value.path == str(tmp_path / "x.pt")
    with pytest.raises(MonaError, match="lacks"):
        load_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), {"0.weight": torch.zeros(4, 3)},
                     tmp_path / "x.pt")


# --- training runs ---------------------------------------------------------------------------

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
