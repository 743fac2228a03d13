"""Checkpoints: written atomically, loaded safely, and every bad file a one-line MonaError."""

import pytest
import torch
from torch import nn

from mona.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint
from mona.errors import MonaError


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
