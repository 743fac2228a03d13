"""Data-parallel training with torchrun: two gloo processes on the CPU train one run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mona.data.phantom import write_phantom


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = write_phantom(root / "ds", patients=5, size=(32, 32), slices=(4, 5))
    out = root / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mona", "train",
        "--data", str(data), "--method", "mona", "--labeled", "1", "--out", str(out), "--device", "cpu",
        "--no-progress", "data.image_size=32", "train.channels_last=false", "train.log_every=1",
        "mona.pretrain_iterations=2", "train.iterations=3", "train.val_every=3",
        "mona.pretrain_batch_labeled=2", "mona.pretrain_batch_unlabeled=2", "mona.finetune_batch_labeled=2",
        "mona.finetune_batch_unlabeled=2", "mona.patch_size=16", "mona.patch_stride=8", "mona.num_queries=16",
        "mona.num_negatives=16", "mona.bank_size=256", "mona.background_bank_size=256",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_replicas_stay_identical(two_process_run):
    out, _ = two_process_run
    state = torch.load(out / "finetune" / "last.pt", weights_only=True)
    assert state["metrics"]["world_size"] == 2
    assert state["metrics"]["replica_difference"] == 0.0


def test_banks_gather_both_ranks(two_process_run):
    out, _ = two_process_run
    state = torch.load(out / "finetune" / "last.pt", weights_only=True)
    # 3 steps x 2 ranks x 2 unlabeled slices; one process alone would hold 6
    assert int(state["method"]["nn_bank.count"]) == 12
    pretrain = torch.load(out / "pretrain" / "last.pt", weights_only=True)
    assert int(pretrain["method"]["global_queue.count"]) == 2 * 2 * 4


def test_only_rank_zero_logs_and_writes(two_process_run):
    out, result = two_process_run
    lines = [json.loads(line) for line in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if r["split"] == "train"] == [1, 2, 3]
    assert sorted(p.name for p in (out / "finetune").glob("*.pt")) == ["best.pt", "last.pt"]
    assert result.stdout.count("done:") == 1


STEP = '''
import sys
import torch
from mona.engine import distributed


def sgd_step(images, labels, average):
    """One SGD step (momentum, weight decay) of a tiny segmenter on a per-pixel mean CE; its new weights."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 3, 3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    average(list(model.parameters()))
    optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def batch(size):
    g = torch.Generator().manual_seed(1)
    return torch.rand(size, 1, 8, 8, generator=g), torch.randint(0, 3, (size, 8, 8), generator=g)


if __name__ == "__main__":
    distributed.setup(torch.device("cpu"))
    rank, images, labels = distributed.rank(), *batch(4)
    weights = sgd_step(images[2 * rank:2 * rank + 2], labels[2 * rank:2 * rank + 2], distributed.average_gradients)
    if rank == 0:
        torch.save(weights, sys.argv[1])
'''


def test_two_ranks_of_batch_b_make_the_update_of_one_process_of_batch_2b(tmp_path, monkeypatch):
    """Gradients are averaged over ranks, not summed: a sum would double the step of the 2b batch."""
    (tmp_path / "ddp_step.py").write_text(STEP)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(tmp_path / "ddp_step.py"), str(tmp_path / "weights.pt")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.syspath_prepend(str(tmp_path))
    import ddp_step

    two_ranks = torch.load(tmp_path / "weights.pt", weights_only=True)
    one_process = ddp_step.sgd_step(*ddp_step.batch(4), lambda parameters: None)
    summed = ddp_step.sgd_step(*ddp_step.batch(4), lambda parameters: [p.grad.mul_(2) for p in parameters])
    torch.testing.assert_close(two_ranks, one_process, rtol=0, atol=1e-6)
    assert (two_ranks - summed).abs().max() > 1e-3  # the test can tell a sum from a mean
