"""Metrics against hand-computed cases, a brute-force reference and the empty policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mona.errors import MonaError
from mona.evaluation.metrics import binary_metrics, score_case


def squares(k: int, ndim: int, shape: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Two 3-wide squares (2D) or cubes (3D), the second shifted by k along the last axis."""
    a = np.zeros((shape,) * ndim, bool)
    b = a.copy()
    a[(slice(2, 5),) * (ndim - 1) + (slice(2, 5),)] = True
    b[(slice(2, 5),) * (ndim - 1) + (slice(2 + k, 5 + k),)] = True
    return a, b


# By hand, for k >= 2: the prediction's surface layers facing the truth lie k-2, k-1 and k
# away from the truth's facing face (3/2/3 voxels per layer in 2D, 9/8/9 in 3D), so
# asd = k-1 exactly and the pooled 95th percentile is the far layer, k.
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_offset_squares_by_hand(ndim, k):
    a, b = squares(k, ndim)
    m = binary_metrics(a, b)
    overlap = max(0, 3 - k) * 3 ** (ndim - 1)
    size = 3**ndim
    assert m["dice"] == pytest.approx(2 * overlap / (2 * size))
    assert m["jaccard"] == pytest.approx(overlap / (2 * size - overlap))
    assert m["asd"] == pytest.approx(k - 1)
    assert m["hd95"] == pytest.approx(k)


@pytest.mark.parametrize("ndim", [2, 3])
def test_spacing_scales_only_the_shift_axis(ndim):
    a, b = squares(3, ndim)
    along = binary_metrics(a, b, spacing=(1.0,) * (ndim - 1) + (2.5,))
    across = binary_metrics(a, b, spacing=(4.0,) * (ndim - 1) + (1.0,))
    assert along["asd"] == pytest.approx(2 * 2.5) and along["hd95"] == pytest.approx(3 * 2.5)
    assert across["asd"] == pytest.approx(2) and across["hd95"] == pytest.approx(3)
    assert along["dice"] == across["dice"] == binary_metrics(a, b)["dice"]


def test_asd_is_directed_from_prediction_to_truth():
    truth = np.zeros((7, 7), bool)
    truth[1:6, 1:6] = True
    pred = np.zeros_like(truth)
    pred[3, 3] = True  # one voxel, its own surface, 2 from the middle of each side of the ring
    assert binary_metrics(pred, truth)["asd"] == pytest.approx(2.0)
    ring_mean = (4 * 2 + 8 * math.sqrt(5) + 4 * math.sqrt(8)) / 16
    assert binary_metrics(truth, pred)["asd"] == pytest.approx(ring_mean)


def test_identical_masks_score_perfectly():
    a, _ = squares(2, 3)
    assert binary_metrics(a, a) == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


def test_empty_policy():
    empty = np.zeros((4, 5, 6), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    assert binary_metrics(empty, empty) == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    spacing = (2.0, 1.0, 0.5)
    diagonal = math.sqrt(8**2 + 5**2 + 3**2)
    for pred, truth in ((empty, full), (full, empty)):
        m = binary_metrics(pred, truth, spacing)
        assert m == pytest.approx({"dice": 0.0, "jaccard": 0.0, "hd95": diagonal, "asd": diagonal})
        assert m["hd95"] > binary_metrics(full, np.roll(full, 2, axis=2), spacing)["hd95"]
    assert binary_metrics(empty, full)["hd95"] == pytest.approx(math.sqrt(16 + 25 + 36))


def reference_metrics(pred, truth, spacing):
    """Slow and independent: surface voxels by a neighbour test, distances by brute force."""

    def on_surface(mask, idx):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = idx.copy()
                nb[axis] += step
                if not (0 <= nb[axis] < mask.shape[axis]) or not mask[tuple(nb)]:
                    return True
        return False

    def surface_points(mask):
        points = [idx for idx in np.argwhere(mask) if on_surface(mask, idx)]
        return np.array(points, dtype=float) * np.asarray(spacing, dtype=float)

    p, t = surface_points(pred), surface_points(truth)
    d = np.sqrt(((p[:, None, :] - t[None, :, :]) ** 2).sum(-1))
    overlap = (pred & truth).sum()
    return {
        "dice": 2 * overlap / (pred.sum() + truth.sum()),
        "jaccard": overlap / (pred | truth).sum(),
        "hd95": np.percentile(np.concatenate([d.min(1), d.min(0)]), 95),
        "asd": d.min(1).mean(),
    }


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    shape, spacing = (6, 11, 9), (2.5, 1.0, 0.7)
    # Blobs of random boxes; seed 0 and 2 keep them off the border, 1 and 3 let them touch it.
    pred, truth = np.zeros(shape, bool), np.zeros(shape, bool)
    low = 1 if seed % 2 == 0 else 0
    for mask in (pred, truth):
        for _ in range(3):
            start = [rng.integers(low, n - 3) for n in shape]
            stop = [s + rng.integers(1, 4) for s in start]
            mask[tuple(slice(s, e) for s, e in zip(start, stop))] = True
        mask &= rng.random(shape) > 0.15  # holes make inner surfaces
    expected = reference_metrics(pred, truth, spacing)
    assert binary_metrics(pred, truth, spacing) == pytest.approx(expected)
    assert binary_metrics(pred, truth) == pytest.approx(reference_metrics(pred, truth, (1, 1, 1)))


def test_bad_arguments():
    a, b = squares(2, 2)
    with pytest.raises(ValueError):
        binary_metrics(a, b[:5])
    with pytest.raises(ValueError):
        binary_metrics(a, b, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        binary_metrics(a, b, spacing=(1.0, 0.0))


def test_score_case_rows():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 1:4, 1:4] = 1
    truth[1:3, 5:7, 5:7] = 2
    pred = truth.copy()
    pred[pred == 2] = 0  # class 2 missed, class 3 absent from both
    rows = score_case(pred, truth, num_classes=4, spacing=(3.0, 1.0, 1.0), case="p01")
    assert [r["class"] for r in rows] == [1, 2, 3]
    assert all(r["case"] == "p01" and r["unit"] == "mm" for r in rows)
    assert rows[0]["dice"] == 1.0 and not rows[0]["pred_empty"]
    assert rows[1]["dice"] == 0.0 and rows[1]["pred_empty"] and not rows[1]["truth_empty"]
    assert rows[1]["hd95"] == pytest.approx(math.sqrt(12**2 + 64 + 64))
    assert rows[2]["dice"] == 1.0 and rows[2]["pred_empty"] and rows[2]["truth_empty"]
    assert score_case(pred, truth, 4)[0]["unit"] == "voxel"


def test_score_case_rejects_bad_input_naming_the_case():
    truth = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(MonaError, match="p07.*shape"):
        score_case(truth[:3], truth, 2, case="p07")
    with pytest.raises(MonaError, match="p07.*0..1"):
        score_case(truth + 2, truth, 2, case="p07")
