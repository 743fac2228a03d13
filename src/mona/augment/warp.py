"""Geometric warps on the training device, shared by the strong augmentation and L_eqv.

A warp is one sampling grid (B, H, W, 2) in `F.grid_sample`'s normalised (x, y) frame with
`align_corners=False`: output pixel p takes the input value at grid[p]. Applying the same grid
to an image, a probability map, a label map and a confidence map moves them identically.
Grids are always float32 (bf16 coordinates are off by up to half a pixel at 256x256), so
`resample` casts floating tensors to float32 and returns them in their own dtype.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import get_tps_transform, warp_points_tps

from mona.randomness import host_to_device

# kornia 0.9 warns on every `get_tps_transform` call that its kernels sit on its first argument (kornia#6404);
# `random_equivariance_warp` centres them there (unless asked for the earlier runs' centres, knowingly)
warnings.filterwarnings("ignore", message="`get_tps_transform` centres its kernels", category=FutureWarning)

TPS_POINTS = 64
"""The TPS displacement is evaluated on at most TPS_POINTS per axis and upsampled bilinearly (see below)."""


def as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int (square) or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def uniform(
    generator: torch.Generator, shape: tuple[int, ...], low: float, high: float, device: torch.device | str
) -> torch.Tensor:
    """U(low, high) float32 draws from `generator`, made on the generator's device and moved to `device`.

    Drawing where the generator lives lets a CPU generator drive CUDA augmentation (and the
    same seed give the same draws) without the caller matching devices.
    """
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return host_to_device(low + (high - low) * draw, device)


def identity_grid(batch: int, size: int | tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """The (B, H, W, 2) float32 grid that samples every pixel at its own centre."""
    height, width = as_size(size)
    grid = create_meshgrid(height, width, normalized_coordinates=True, device=torch.device(device),
                           dtype=torch.float32, align_corners=False)
    return grid.expand(batch, -1, -1, -1)


def resample(tensor: torch.Tensor, grid: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """Sample `tensor` at `grid`; outside the image the result is 0 (background, zero confidence).

    Accepts (B, C, H, W) or (B, H, W) tensors. `mode` defaults to "nearest" for integer tensors
    (label maps: values are never blended) and "bilinear" for floating ones (images, softmax
    maps, confidences). The result has the input's shape and dtype.
    """
    integer = not tensor.is_floating_point()
    mode = mode or ("nearest" if integer else "bilinear")
    if integer and mode != "nearest":
        raise ValueError(f"integer tensors (label maps) can only be resampled with 'nearest', not {mode!r}")
    squeeze = tensor.dim() == 3
    values = (tensor.unsqueeze(1) if squeeze else tensor).float()
    out = F.grid_sample(values, grid.to(device=values.device, dtype=torch.float32), mode=mode,
                        padding_mode="zeros", align_corners=False)
    if squeeze:
        out = out.squeeze(1)
    return out.round().to(tensor.dtype) if integer else out.to(tensor.dtype)


class Warp:
    """A fixed geometric transform: `W(tensor, mode=None)` resamples any tensor with the same grid.

    `grid` is the (B, H, W, 2) sampling grid; `inside` (B, H, W) bool marks output pixels whose
    source lies inside the input image (elsewhere the warped values are padding zeros).
    """

    def __init__(self, grid: torch.Tensor):
        self.grid = grid

    @property
    def inside(self) -> torch.Tensor:
        return (self.grid.abs() <= 1).all(dim=-1)

    def __call__(self, tensor: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return resample(tensor, self.grid, mode)


def random_equivariance_warp(
    generator: torch.Generator,
    batch: int,
    size: int | tuple[int, int],
    device: torch.device | str,
    rotation: float = 60.0,
    scale: tuple[float, float] = (0.8, 1.2),
    translation: float = 0.1,
    mirror_p: float = 0.5,
    control_points: int = 5,
    jitter: float = 0.01,
    kernel_centres: str = "moved",
) -> Warp:
    """The random warp W of MONA's equivariance loss (spec section 4, L_eqv): one per sample.

    Output pixel x samples the input at S(T(x)): T is a thin-plate spline (kornia) whose
    `control_points` x `control_points` regular control points are moved by U(-jitter, jitter)
    of the image size; S is a similarity with angle U(-rotation, rotation) degrees, scale
    U(*scale), translation U(-translation, translation) of the size per axis, and a horizontal
    mirror with probability `mirror_p`. Rotation and scale act in pixel units so that a
    non-square image is not sheared. The spline is smooth, so its displacement is evaluated on
    at most TPS_POINTS x TPS_POINTS points spanning the first to the last pixel centre and
    upsampled bilinearly: at 256x256 that is 16x fewer kernel evaluations for an error of
    about 0.03 pixel (exact for sizes up to TPS_POINTS and at zero jitter). Both are folded
    into one grid, so W costs a single `grid_sample` per tensor and is identical for images,
    softmax maps, labels and confidences. `kernel_centres` "moved" evaluates the spline with its
    kernels where it was fitted, on the moved points, so that T maps each onto its regular point;
    "regular" evaluates it with kernels on the regular grid, as every MONA run before 2026-12-08
    did: a smooth warp, but not that spline, moving pixels 2-2.5x further (docs/method.md).
    """
    if kernel_centres not in ("moved", "regular"):
        raise ValueError(f"kernel_centres must be 'moved' or 'regular', not {kernel_centres!r}")
    height, width = as_size(size)
    base = identity_grid(batch, (height, width), device)

    side = torch.linspace(-1.0, 1.0, control_points, device=device)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    src = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)
    dst = src + uniform(generator, (batch, control_points**2, 2), -2.0 * jitter, 2.0 * jitter, device)
    kernel_weights, affine_weights = get_tps_transform(dst, src)
    coarse = [min(n, TPS_POINTS) for n in (height, width)]
    cy, cx = (torch.linspace(-1 + 1 / n, 1 - 1 / n, c, device=device) for n, c in zip((height, width), coarse))
    coarse_base = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1).reshape(1, -1, 2).expand(batch, -1, -1)
    centres = dst if kernel_centres == "moved" else src
    coarse_shift = warp_points_tps(coarse_base, centres, kernel_weights, affine_weights) - coarse_base
    shift_map = coarse_shift.reshape(batch, *coarse, 2).permute(0, 3, 1, 2)
    tps_shift = F.interpolate(shift_map, size=(height, width), mode="bilinear", align_corners=True)
    points = base + tps_shift.permute(0, 2, 3, 1)

    angle = uniform(generator, (batch,), -math.radians(rotation), math.radians(rotation), device)
    factor = uniform(generator, (batch,), scale[0], scale[1], device)
    offset = uniform(generator, (batch, 2), -2.0 * translation, 2.0 * translation, device)
    mirror = torch.where(uniform(generator, (batch,), 0.0, 1.0, device) < mirror_p, -1.0, 1.0)
    cos, sin = torch.cos(angle) * factor, torch.sin(angle) * factor
    half = torch.tensor([width / 2.0, height / 2.0], device=device)
    pixels = points * half
    x, y = pixels[..., 0] * mirror[:, None, None], pixels[..., 1]
    cos, sin = cos[:, None, None], sin[:, None, None]
    rotated = torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)
    return Warp(rotated / half + offset[:, None, None, :])
