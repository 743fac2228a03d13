"""FIFO memories of embeddings: the anchor queues of stage 1 and L_nn, and the per-class
negative banks of L_contrast (MONA_SPEC sections 3 and 4).

Both keep their contents as buffers, so a method's `state_dict()` saves them and a resumed
run continues with the same memories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mona.randomness import device_generator


class FeatureQueue(nn.Module):
    """A FIFO ring buffer of L2-normalised embeddings (MoCo / ISD style queue).

    Buffers: `bank` (K, D) float32, `ptr` (the slot written next) and `count` (filled slots).
    While the queue is filling, the filled part is `bank[:count]`; once full, the next push
    overwrites the oldest entries. A push of more than K rows keeps the newest K. `count` is
    mirrored on the host (set by `push` from the pushed shape, and on loading a state dict), so
    `len` and `items` never wait for the device to read it back.

    `gather_fn` is applied to every pushed batch first (identity by default); distributed
    training passes an all_gather there so that every rank stores the same queue.

    Args:
        size: K, the number of embeddings kept.
        dim: D, the embedding size.
        gather_fn: optional `Tensor -> Tensor` applied to `x` before it is stored.

    Example:
        >>> queue = FeatureQueue(size=4, dim=2)
        >>> queue.push(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        >>> queue.items()
        tensor([[0.6000, 0.8000],
                [0.0000, 1.0000]])
        >>> len(queue)
        2
    """

    def __init__(self, size: int, dim: int, gather_fn: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue needs size >= 1 and dim >= 1, got {size} and {dim}")
        self.size = size
        self.dim = dim
        self.gather_fn = gather_fn
        self.register_buffer("bank", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._filled = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._filled = int(self.count)  # once, on loading; never inside a step

    @torch.no_grad()
    def push(self, x: Tensor) -> None:
        """Store the rows of `x` (N, D), L2-normalised and detached, oldest out first."""
        if self.gather_fn is not None:
            x = self.gather_fn(x)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue expects (N, {self.dim}) embeddings, got {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return
        x = F.normalize(x.detach().to(self.bank), dim=1)
        if n >= self.size:
            self.bank.copy_(x[-self.size :])
            self.ptr.zero_()
            self.count.fill_(self.size)
            self._filled = self.size
            return
        slots = (self.ptr + torch.arange(n, device=self.bank.device)) % self.size
        self.bank[slots] = x
        self.ptr.copy_((self.ptr + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))
        self._filled = min(self._filled + n, self.size)

    def items(self) -> Tensor:
        """The filled part of the bank, (count, D), in storage order (a view, no copy)."""
        return self.bank[: len(self)]

    def __len__(self) -> int:
        return self._filled

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class ClassMemoryBank(nn.Module):
    """Per-class FIFO banks of pixel embeddings: the hard negatives of L_contrast.

    One `FeatureQueue` per class (`queues[c]`), each with its own size; MONA keeps 50000
    background and 30000 foreground entries (`MonaConfig.background_bank_size`,
    `bank_size`). Negatives are drawn uniformly, with replacement, from the filled entries
    using the caller's generator, so a resumed run draws the same negatives.

    Args:
        sizes: bank size per class, index 0 the background.
        dim: D, the embedding size.
        gather_fn: optional `Tensor -> Tensor` applied to every push (e.g. all_gather).

    Example:
        >>> bank = ClassMemoryBank([5, 3], dim=2)
        >>> bank.push(1, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> bank.filled(0), bank.filled(1)
        (0, 2)
        >>> bank.sample(1, 4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    def __init__(self, sizes: Sequence[int], dim: int, gather_fn: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.queues = nn.ModuleList(FeatureQueue(size, dim, gather_fn) for size in sizes)
        self.dim = dim

    def __len__(self) -> int:
        return len(self.queues)

    def push(self, class_index: int, x: Tensor) -> None:
        """Store the embeddings `x` (N, D) in the bank of class `class_index`."""
        self.queues[class_index].push(x)

    def filled(self, class_index: int) -> int:
        """How many embeddings the bank of class `class_index` holds."""
        return len(self.queues[class_index])

    def sample_indices(self, class_index: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` uniform draws, with replacement, of row indices into `queues[class_index].items()`: (n,).

        Drawn with `torch.randint(filled, (n,))` on the bank's device, from `generator` or a
        generator it seeds there (`mona.randomness.device_generator`).
        """
        queue = self.queues[class_index]
        if len(queue) == 0:
            raise ValueError(f"the memory bank of class {class_index} is empty")
        if generator is not None:
            generator = device_generator(generator, queue.bank.device)
        return torch.randint(len(queue), (n,), generator=generator, device=queue.bank.device)

    def sample(self, class_index: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw `n` stored embeddings of class `class_index` uniformly with replacement: (n, D)."""
        return self.queues[class_index].items().index_select(0, self.sample_indices(class_index, n, generator))
