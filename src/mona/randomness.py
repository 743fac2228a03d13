"""Where random numbers are drawn.

Every training step owns one CPU `torch.Generator`, seeded from (seed, iteration, rank), so a
run is reproducible on any device and a resumed run draws what the uninterrupted one would.
Small draws (per-image augmentation parameters) stay on that generator. Large ones (noise
maps, the 131072 negative indices per class of L_contrast) come from `device_generator`:
on a CUDA step, drawing 10^5-10^6 numbers on the CPU and copying them over cost more than
the kernels that use them.
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
