import numpy as np
import pytest
import torch
from kornia.geometry.transform import get_tps_transform, warp_points_tps

from mona.augment.warp import identity_grid, random_equivariance_warp, resample, uniform


def _disk_batch(batch=4, size=64):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.tensor([[20, 24], [32, 32], [40, 28], [26, 40]])[:batch]
    radii = torch.tensor([10, 14, 9, 12])[:batch]
    dist = ((ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2).float()
    label = (dist <= radii[:, None, None].float() ** 2).long() * 2
    image = (label > 0).float()[:, None] * 0.8 + 0.1
    return image, label


def _iou(a, b):
    return (a & b).sum().item() / (a | b).sum().item()


def test_warp_moves_image_probabilities_and_labels_identically():
    image, label = _disk_batch()
    warp = random_equivariance_warp(torch.Generator().manual_seed(1), 4, 64, "cpu")
    warped_image, warped_label = warp(image), warp(label)
    assert warped_label.dtype == torch.long and warped_label.shape == label.shape
    assert set(warped_label.unique().tolist()) <= {0, 2}
    assert _iou(warped_image[:, 0] > 0.5, warped_label > 0) > 0.95
    probs = torch.stack([(label == 0).float(), (label > 0).float()], dim=1)
    assert _iou(warp(probs)[:, 1] > 0.5, warped_label > 0) > 0.95
    assert not torch.equal(warped_label, label)


def test_zero_jitter_identity_similarity_is_identity():
    image = torch.rand(2, 3, 40, 56)
    label = torch.randint(0, 4, (2, 40, 56))
    warp = random_equivariance_warp(torch.Generator().manual_seed(0), 2, (40, 56), "cpu",
                                    rotation=0.0, scale=(1.0, 1.0), translation=0.0, mirror_p=0.0, jitter=0.0)
    torch.testing.assert_close(warp.grid, identity_grid(2, (40, 56), "cpu"), atol=1e-4, rtol=0)
    torch.testing.assert_close(warp(image), image, atol=1e-3, rtol=0)
    assert torch.equal(warp(label), label)
    assert warp.inside.all()


def test_pure_tps_matches_kornia_at_full_resolution():
    height, width, jitter = 96, 80, 0.05
    warp = random_equivariance_warp(torch.Generator().manual_seed(4), 2, (height, width), "cpu",
                                    rotation=0.0, scale=(1.0, 1.0), translation=0.0, mirror_p=0.0, jitter=jitter)
    side = torch.linspace(-1.0, 1.0, 5)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    src = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(2, -1, -1)
    dst = src + uniform(torch.Generator().manual_seed(4), (2, 25, 2), -2 * jitter, 2 * jitter, "cpu")
    base = identity_grid(2, (height, width), "cpu")
    full = warp_points_tps(base.reshape(2, -1, 2), dst, *get_tps_transform(dst, src)).reshape(2, height, width, 2)
    error_px = ((warp.grid - full) * torch.tensor([width / 2, height / 2])).abs().max()
    assert error_px < 0.1 and ((full - base) * width / 2).abs().max() > 1.0


def _reference_spline(centres: np.ndarray, targets: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The thin-plate spline f with f(centres[i]) = targets[i] (kernel r^2 log r plus an affine part,
    solved directly in float64), evaluated at `points` (N, 2)."""
    def kernel(a, b):
        r2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return np.where(r2 > 0, 0.5 * r2 * np.log(np.where(r2 > 0, r2, 1.0)), 0.0)

    n = len(centres)
    affine = np.hstack([np.ones((n, 1)), centres])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = kernel(centres, centres), affine, affine.T
    weights = np.linalg.solve(system, np.vstack([targets, np.zeros((3, 2))]))
    return kernel(points, centres) @ weights[:n] + np.hstack([np.ones((len(points), 1)), points]) @ weights[n:]


@pytest.mark.parametrize("kernel_centres", ["moved", "regular"])
def test_tps_is_the_spline_that_maps_each_moved_point_onto_its_regular_one(kernel_centres):
    """L_eqv's T against a float64 thin-plate spline solved from its control points: with the kernels
    on the moved points (the default) the warp is that spline; on the regular grid (the earlier runs,
    kornia#6404) it is not, and moves pixels further."""
    size, jitter = 48, 0.03
    warp = random_equivariance_warp(torch.Generator().manual_seed(2), 1, size, "cpu", rotation=0.0,
                                    scale=(1.0, 1.0), translation=0.0, mirror_p=0.0, jitter=jitter,
                                    kernel_centres=kernel_centres)
    side = np.linspace(-1.0, 1.0, 5)
    ys, xs = np.meshgrid(side, side, indexing="ij")
    regular = np.stack([xs, ys], -1).reshape(-1, 2)
    moved = regular + uniform(torch.Generator().manual_seed(2), (1, 25, 2), -2 * jitter, 2 * jitter,
                              "cpu")[0].double().numpy()
    base = identity_grid(1, size, "cpu")[0].reshape(-1, 2).double().numpy()
    expected = _reference_spline(moved, regular, base)
    np.testing.assert_allclose(_reference_spline(moved, regular, moved), regular, atol=1e-9)
    error = np.abs(warp.grid[0].reshape(-1, 2).double().numpy() - expected).max()
    if kernel_centres == "moved":
        assert error < 1e-4
    else:
        assert error > 0.01 and np.abs(warp.grid[0].reshape(-1, 2).numpy() - base).max() > np.abs(expected - base).max()


def test_mirror_only_flips_horizontally():
    image = torch.rand(3, 1, 16, 24)
    warp = random_equivariance_warp(torch.Generator().manual_seed(0), 3, (16, 24), "cpu",
                                    rotation=0.0, scale=(1.0, 1.0), translation=0.0, mirror_p=1.0, jitter=0.0)
    torch.testing.assert_close(warp(image), image.flip(-1), atol=1e-3, rtol=0)


def test_same_seed_same_warp_and_outside_is_zero():
    a = random_equivariance_warp(torch.Generator().manual_seed(7), 3, 32, "cpu")
    b = random_equivariance_warp(torch.Generator().manual_seed(7), 3, 32, "cpu")
    c = random_equivariance_warp(torch.Generator().manual_seed(8), 3, 32, "cpu")
    assert torch.equal(a.grid, b.grid) and not torch.equal(a.grid, c.grid)
    ones = a(torch.ones(3, 1, 32, 32), mode="nearest")
    assert torch.equal(ones[:, 0] > 0, a.inside)


def test_bf16_keeps_dtype():
    image, label = _disk_batch()
    warp = random_equivariance_warp(torch.Generator().manual_seed(3), 4, 64, "cpu")
    out = warp(image.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), warp(image), atol=1e-2, rtol=0)


def test_resample_rejects_bilinear_labels():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    try:
        resample(label, identity_grid(1, 8, "cpu"), mode="bilinear")
    except ValueError:
        return
    raise AssertionError("bilinear resampling of a label map must fail")
