"""Data-parallel training under `torchrun` (PyTorch's own launcher and process groups).

Each process trains a replica on its own batches (seeds differ per rank); after every
backward pass the gradients are averaged with one `all_reduce` over a flat buffer, so
replicas stay identical without wrapping the model (a method calls its student, teacher
and heads in any order it likes). Queues and memory banks gather every rank's entries
(`all_gather`), so a bank means the same with 1 or N processes. Only rank 0 logs,
validates and writes checkpoints. Single-process runs never touch torch.distributed.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (torchrun's RANK before the process group exists)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the torchrun process group (NCCL on CUDA, gloo on the CPU); one GPU per process."""
    if world_size() == 1 or dist.is_initialized():
        return _local_device(device)
    device = _local_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (in rank order); ranks may hold different row counts."""
    count = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    largest = int(max(c.item() for c in counts))
    padded = torch.zeros((largest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average gradients over ranks with one all_reduce of a flat buffer."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def share_banks(method: nn.Module) -> None:
    """Make every FIFO queue/bank of a method gather its entries from all ranks."""
    from mona.losses.queue import FeatureQueue

    for module in method.modules():
        if isinstance(module, FeatureQueue):
            module.gather_fn = all_gather_rows


def replica_difference(method: nn.Module) -> float:
    """Largest difference of any student parameter between this rank and rank 0 (0 = in sync)."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in method.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    difference = (flat - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return float(difference)


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set on any rank (a stop asked of one process stops them all at the same step)."""
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    if active():
        dist.barrier()
