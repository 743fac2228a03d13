"""Where random numbers are drawn, and how they reach the training device.

Every training step owns one CPU `torch.Generator`, seeded from (seed, iteration, rank), so a
run is reproducible on any device and a resumed run draws what the uninterrupted one would.
Small draws (per-image augmentation parameters) stay on that generator. Large ones (noise
maps, the 131072 negative indices per class of L_contrast) come from `device_generator`:
on a CUDA step, drawing 10^5-10^6 numbers on the CPU and copying them over cost more than
the kernels that use them. Small draws reach a CUDA device through `host_to_device`: a
copy from pageable host memory makes the CPU wait until the GPU has finished all queued
work (CUDA synchronises the stream first), and a MONA step made ~125 of them (profile of
2026-11-27, docs/results/2026-11-27-diary.md), so the CPU could never queue work ahead of the GPU.
"""

from __future__ import annotations

import torch


def device_generator(generator: torch.Generator, device: torch.device | str) -> torch.Generator:
    """A generator on `device`, seeded by one draw of `generator`; `generator` itself when it is already there."""
    device = torch.device(device)
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def host_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor.to(device)`; from the CPU to CUDA through pinned memory, without waiting for the GPU."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
