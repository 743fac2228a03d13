"""MONA's strong augmentation of the student's unlabeled input (spec section 4) and stage 1's teacher view.

Everything runs batched on the tensors' device (no PIL, no numpy: spec defect 7) and every
random draw comes from the `torch.Generator` passed in, so the same seed gives the same output.
Images are (B, 1, H, W) floats in [0, 1], pseudo-labels (B, H, W) long, confidences (B, H, W)
float. Geometric changes move the pseudo-labels and confidences with the image (spec defect 3):
images and confidences are resampled bilinearly, labels with nearest, and everything outside
the image becomes 0 (background, zero confidence). Photometric ops keep the input dtype (bf16
included); geometric ones sample in float32 and return the input dtype (see `warp.resample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_contrast, adjust_contrast_with_mean_subtraction
from kornia.filters import gaussian_blur2d

from mona.augment.warp import as_size, identity_grid, resample, uniform
from mona.randomness import host_to_device

DIFFEOMORPHISMS = ("advmorph", "rms_cells")
"""How `random_diffeomorphism` reads its magnitude (see there)."""

VELOCITY_SMOOTHING = 3.0
"""Gaussian sigma, in cells of the velocity grid, of the "rms_cells" reading."""


def _coin(generator: torch.Generator, batch: int, p: float, device: torch.device | str) -> torch.Tensor:
    """(B, 1, 1, 1) bool: which samples an op with probability `p` applies to."""
    return (uniform(generator, (batch,), 0.0, 1.0, device) < p).view(-1, 1, 1, 1)


def cutmix(
    image: torch.Tensor, pseudo_label: torch.Tensor, confidence: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste into every sample a box of half the image area taken from another sample of the batch.

    The partner of each sample comes from a random permutation followed by a random cyclic
    shift, so it is never the sample itself (when B > 1). The box width is uniform in
    [W/2, W], its height makes the area H*W/2 (to rounding), its position uniform. Pseudo-labels
    and confidences are mixed in exactly the pixels of the image. Returns the mixed image,
    pseudo-label and confidence and the (B, H, W) bool box mask (True = pasted from the partner).
    """
    batch, _, height, width = image.shape
    device = image.device
    order = host_to_device(torch.randperm(batch, generator=generator, device=generator.device), device)
    shift = host_to_device(torch.randint(1, max(batch, 2), (1,), generator=generator, device=generator.device), device)
    partner = torch.empty_like(order)
    partner[order] = order[(torch.arange(batch, device=device) + shift) % batch]

    draws = uniform(generator, (batch, 3), 0.0, 1.0, device)
    min_width = math.ceil(width / 2)
    box_w = (min_width + (draws[:, 0] * (width - min_width + 1)).floor()).clamp(max=width)
    box_h = (height * width / 2 / box_w).round().clamp(1, height)
    x0 = (draws[:, 1] * (width - box_w + 1)).floor()
    y0 = (draws[:, 2] * (height - box_h + 1)).floor()
    cols = torch.arange(width, device=device)
    rows = torch.arange(height, device=device)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + box_w)[:, None])
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + box_h)[:, None])
    box = in_rows[:, :, None] & in_cols[:, None, :]

    mixed_image = torch.where(box[:, None], image[partner], image)
    mixed_label = torch.where(box, pseudo_label[partner], pseudo_label)
    mixed_confidence = torch.where(box, confidence[partner], confidence)
    return mixed_image, mixed_label, mixed_confidence, box


def draw_color_jitter(
    generator: torch.Generator, batch: int, device: torch.device | str, p: float = 0.5, low: float = 0.75,
    high: float = 1.25, random_order: bool = False,
) -> dict[str, torch.Tensor | None]:
    """`color_jitter`'s random numbers for a batch, on `device` (see there)."""
    return {"brightness": uniform(generator, (batch,), low, high, device),
            "contrast": uniform(generator, (batch,), low, high, device),
            "apply": _coin(generator, batch, p, device),
            "contrast_first": _coin(generator, batch, 0.5, device) if random_order else None}


def apply_color_jitter(image: torch.Tensor, draws: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """`color_jitter` with its random numbers drawn beforehand (`draw_color_jitter`)."""
    brightness, contrast = draws["brightness"], draws["contrast"]
    jittered = adjust_contrast_with_mean_subtraction(adjust_contrast(image, brightness), contrast)
    if draws["contrast_first"] is not None:
        contrast_first = adjust_contrast(adjust_contrast_with_mean_subtraction(image, contrast), brightness)
        jittered = torch.where(draws["contrast_first"], contrast_first, jittered)
    return torch.where(draws["apply"], jittered, image)


def color_jitter(
    image: torch.Tensor, generator: torch.Generator, p: float = 0.5, low: float = 0.75, high: float = 1.25,
    random_order: bool = False,
) -> torch.Tensor:
    """With probability `p` per sample, scale brightness and contrast by factors U(low, high).

    Torchvision/PIL semantics, as in the authors' ColorJitter: brightness multiplies the pixel
    values (kornia's `adjust_contrast` is that multiplication), contrast blends with the
    image mean (`adjust_contrast_with_mean_subtraction`); both clamp to [0, 1]. Brightness comes
    first unless `random_order`, which, as torchvision's `ColorJitter` does, puts contrast first in
    half of the samples (UniMatch's and ABD's strong views). Returns a new tensor.
    """
    return apply_color_jitter(image, draw_color_jitter(generator, image.shape[0], image.device, p, low, high,
                                                       random_order))


def draw_gaussian_blur(
    generator: torch.Generator, batch: int, device: torch.device | str, p: float = 0.5,
    sigma: tuple[float, float] = (0.15, 1.15),
) -> dict[str, torch.Tensor | int]:
    """`gaussian_blur`'s random numbers for a batch, on `device`, and its kernel size (see there)."""
    return {"sigmas": uniform(generator, (batch, 1), sigma[0], sigma[1], device).expand(-1, 2),
            "apply": _coin(generator, batch, p, device), "kernel": 2 * math.ceil(3 * sigma[1]) + 1}


def apply_gaussian_blur(image: torch.Tensor, draws: dict[str, torch.Tensor | int]) -> torch.Tensor:
    """`gaussian_blur` with its random numbers drawn beforehand (`draw_gaussian_blur`)."""
    return torch.where(draws["apply"], gaussian_blur2d(image, draws["kernel"], draws["sigmas"]), image)


def gaussian_blur(
    image: torch.Tensor, generator: torch.Generator, p: float = 0.5, sigma: tuple[float, float] = (0.15, 1.15)
) -> torch.Tensor:
    """With probability `p` per sample, a Gaussian blur of sigma U(*sigma) pixels (one per sample).

    kornia's `gaussian_blur2d` takes a (B, 2) sigma, so the whole batch is one call; the kernel
    spans 3 sigma of the largest sigma, with reflected borders. Returns a new tensor.
    """
    return apply_gaussian_blur(image, draw_gaussian_blur(generator, image.shape[0], image.device, p, sigma))


def draw_photometric(generator: torch.Generator, batch: int, device: torch.device | str) -> dict[str, dict]:
    """`photometric_view`'s random numbers for a batch, on `device`."""
    return {"jitter": draw_color_jitter(generator, batch, device, p=0.5, low=0.8, high=1.2),
            "blur": draw_gaussian_blur(generator, batch, device, p=0.5, sigma=(0.15, 1.15))}


def apply_photometric(image: torch.Tensor, draws: dict[str, dict]) -> torch.Tensor:
    """`photometric_view` with its random numbers drawn beforehand (`draw_photometric`)."""
    return apply_gaussian_blur(apply_color_jitter(image, draws["jitter"]), draws["blur"])


def photometric_view(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Stage 1's teacher view (spec section 3): colour jitter p 0.5 with brightness/contrast
    factors in [0.8, 1.2], then Gaussian blur p 0.5 with sigma U(0.15, 1.15).

    Returns a new tensor and never touches `image`, which stays the student's view (spec defect 4).
    """
    return apply_photometric(image, draw_photometric(generator, image.shape[0], image.device))


def _advmorph_velocity(generator: torch.Generator, batch: int, grid: int, magnitude: float,
                       device: torch.device) -> torch.Tensor:
    """advchain's AdvMorph velocity (B, 2, grid, grid), in its normalised units (+-1 = first/last pixel centre).

    U(-1, 1) per entry, scaled so that each sample's whole field has L2 norm `magnitude` (its
    epsilon), then a Gaussian of sigma 1 cell (9 taps, zero padding).
    """
    noise = uniform(generator, (batch, 2, grid, grid), -1.0, 1.0, device)
    norm = noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return gaussian_blur2d(noise * (magnitude / norm), 9, (1.0, 1.0), border_type="constant")


def _rms_cells_velocity(generator: torch.Generator, batch: int, grid: int, magnitude: float,
                        device: torch.device) -> torch.Tensor:
    """The earlier reading (B, 2, grid, grid) in `grid_sample` units: Gaussian noise smoothed by
    `VELOCITY_SMOOTHING` cells and scaled to an RMS length of `magnitude` cells."""
    noise = host_to_device(torch.randn((batch, 2, grid, grid), generator=generator, device=generator.device), device)
    kernel = 2 * math.ceil(3 * VELOCITY_SMOOTHING) + 1
    smooth = gaussian_blur2d(noise, kernel, (VELOCITY_SMOOTHING, VELOCITY_SMOOTHING))
    rms = smooth.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    return smooth * (magnitude * 2.0 / grid) / rms


def random_diffeomorphism(
    generator: torch.Generator,
    batch: int,
    size: int | tuple[int, int],
    grid: int = 32,
    magnitude: float = 1.5,
    steps: int = 7,
    device: torch.device | str | None = None,
    reading: str = "advmorph",
) -> torch.Tensor:
    """A random smooth diffeomorphic sampling grid (B, H, W, 2) for `apply_grid`, one per sample.

    A random stationary velocity field on a `grid` x `grid` lattice is upsampled bilinearly to
    the image size and exponentiated by scaling and squaring: the displacement v / 2**steps is
    composed with itself `steps` times; small steps keep every composition invertible, so the
    result is orientation-preserving. `reading` says what `magnitude` means:

    - "advmorph" (default): advchain's AdvMorph, the authors' strong view (`epsilon` 1.5,
      `vector_size` image size / 8 = 32 at 256): the velocity has L2 norm `magnitude` over the
      whole 2 x grid x grid field in normalised units, smoothed by 1 cell; the result is
      clamped to the image, smoothed by 1 pixel and clamped again, as AdvMorph does (its 8 squarings against
      our 7 change nothing at this size). At 256 px it moves pixels ~1.5 px RMS, ~4 px at most
      per image (`tests/test_augment_strong.py` checks it against a re-implementation).
    - "rms_cells": this package's earlier reading, an RMS velocity of `magnitude` grid cells
      (smoothed by `VELOCITY_SMOOTHING` cells): ~16 px RMS and ~40 px at most per image at 256 px.

    Neither kornia nor MONAI offers this random stationary-velocity warp on a batch of torch
    tensors (MONAI's elastic transforms add a displacement, which can fold), hence our own.
    `magnitude` 0 gives the identity grid. `device` defaults to the generator's.
    """
    if reading not in DIFFEOMORPHISMS:
        raise ValueError(f"reading must be one of {DIFFEOMORPHISMS}, not {reading!r}")
    device = generator.device if device is None else torch.device(device)
    height, width = as_size(size)
    if reading == "advmorph":
        velocity = _advmorph_velocity(generator, batch, grid, magnitude, device)
        # AdvMorph's unit is (size - 1) / 2 pixels, grid_sample's (align_corners=False) size / 2
        velocity = velocity * torch.tensor([(width - 1) / width, (height - 1) / height], device=device).view(1, 2, 1, 1)
    else:
        velocity = _rms_cells_velocity(generator, batch, grid, magnitude, device)
    displacement = F.interpolate(velocity, size=(height, width), mode="bilinear", align_corners=False) / 2**steps
    base = identity_grid(batch, (height, width), device)
    for _ in range(steps):
        moved = base + displacement.permute(0, 2, 3, 1)
        displacement = displacement + F.grid_sample(
            displacement, moved, mode="bilinear", padding_mode="border", align_corners=False
        )
    if reading == "rms_cells":
        return base + displacement.permute(0, 2, 3, 1)
    edge = torch.tensor([1 - 1 / width, 1 - 1 / height], device=device)  # the outermost pixel centres
    points = torch.maximum(torch.minimum(base + displacement.permute(0, 2, 3, 1), edge), -edge)
    displacement = gaussian_blur2d((points - base).permute(0, 3, 1, 2), 9, (1.0, 1.0), border_type="constant")
    return torch.maximum(torch.minimum(base + displacement.permute(0, 2, 3, 1), edge), -edge)


def apply_grid(
    grid: torch.Tensor,
    image: torch.Tensor | None = None,
    label: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Warp the given image (bilinear), label (nearest) and confidence (bilinear) with one grid.

    Returns (image, label, confidence), None where not given; outside the image all are 0.
    """
    return tuple(None if t is None else resample(t, grid) for t in (image, label, confidence))


@dataclass
class StrongAugment:
    """The student's strong view of an unlabeled batch, with its pseudo-labels and confidences.

    In order: CutMix, colour jitter (p 0.5, factors 0.75-1.25), Gaussian blur (p 0.5, sigma
    0.15-1.15), then with probability `deform_p` for the whole batch a random diffeomorphism
    (32x32 velocity grid, magnitude 1.5 read as `diffeomorphism` says, 7 squarings; see
    `random_diffeomorphism`) applied to image, pseudo-label and confidence alike.
    `enabled=False` (the ablation without strong augmentation) returns the inputs unchanged.
    """

    enabled: bool = True
    use_cutmix: bool = True
    jitter_p: float = 0.5
    jitter_range: tuple[float, float] = (0.75, 1.25)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.15, 1.15)
    deform_p: float = 0.5
    grid: int = 32
    magnitude: float = 1.5
    steps: int = 7
    diffeomorphism: str = "advmorph"

    def __call__(
        self,
        image: torch.Tensor,
        pseudo_label: torch.Tensor,
        confidence: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,1,H,W) image, (B,H,W) pseudo-label, (B,H,W) confidence in; the same, augmented, out."""
        if not self.enabled:
            return image, pseudo_label, confidence
        if self.use_cutmix:
            image, pseudo_label, confidence, _ = cutmix(image, pseudo_label, confidence, generator)
        image = color_jitter(image, generator, self.jitter_p, *self.jitter_range)
        image = gaussian_blur(image, generator, self.blur_p, self.blur_sigma)
        if float(torch.rand(1, generator=generator, device=generator.device)) < self.deform_p:
            grid = random_diffeomorphism(generator, image.shape[0], tuple(image.shape[-2:]), self.grid,
                                         self.magnitude, self.steps, device=image.device,
                                         reading=self.diffeomorphism)
            image, pseudo_label, confidence = apply_grid(grid, image, pseudo_label, confidence)
        return image, pseudo_label, confidence
