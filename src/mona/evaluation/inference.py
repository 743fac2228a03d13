"""Slice-wise prediction of whole volumes, the way every 2D method here is evaluated.

Each slice is resized to the network size (linear), predicted, and its class
*probabilities* are resized back to the slice's own size (linear) before the argmax, so
boundaries are not quantised twice (SSL4MIS resizes the argmax with nearest neighbour).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from mona.augment.weak import resize_images


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    return torch.autocast(device.type, dtype=dtype) if enabled else nullcontext()


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray,
    image_size: int,
    device: torch.device,
    amp: bool = False,
    batch_size: int = 32,
    tta: bool = False,
) -> torch.Tensor:
    """Class probabilities (C, D, H, W) on the CPU for a (D, H, W) volume; `tta` averages flips."""
    was_training = model.training
    model.eval()
    slices = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
    original = tuple(slices.shape[-2:])
    outputs = []
    for start in range(0, slices.shape[0], batch_size):
        chunk = resize_images(slices[start : start + batch_size].to(device), (image_size, image_size))
        flips = [(), (-1,), (-2,)] if tta else [()]
        probs = 0
        with autocast(device, amp):
            for dims in flips:
                view = chunk.flip(dims) if dims else chunk
                logits = model(view).logits.float()
                logits = logits.flip(dims) if dims else logits
                probs = probs + torch.softmax(logits, dim=1)
        outputs.append(resize_images(probs / len(flips), original).cpu())
    model.train(was_training)
    return torch.cat(outputs).permute(1, 0, 2, 3)


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """3D Dice of each foreground class (empty in both = 1), for fast validation during training."""
    scores = []
    for c in range(1, num_classes):
        p, t = prediction == c, truth == c
        denominator = p.sum() + t.sum()
        scores.append(1.0 if denominator == 0 else 2.0 * np.logical_and(p, t).sum() / denominator)
    return np.asarray(scores)
