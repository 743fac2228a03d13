"""Label maps from probabilities, the largest connected component per class against a
breadth-first flood fill written here, and the choice of classes on validation volumes."""

from collections import deque
from itertools import product

import numpy as np
import pytest
import torch

from mona.evaluation.postprocess import choose_largest_component, keep_largest_component, labels_from_probabilities


def slow_largest_component(labels, num_classes):
    """Flood fill over the 26 (3D) neighbours, voxel by voxel; the first-found largest component wins."""
    result = labels.copy()
    steps = [s for s in product((-1, 0, 1), repeat=labels.ndim) if any(s)]
    for cls in range(1, num_classes):
        seen, components = np.zeros(labels.shape, bool), []
        for start in zip(*np.nonzero(labels == cls)):
            if seen[start]:
                continue
            seen[start], queue, members = True, deque([start]), []
            while queue:
                voxel = queue.popleft()
                members.append(voxel)
                for step in steps:
                    near = tuple(v + s for v, s in zip(voxel, step))
                    inside = all(0 <= n < size for n, size in zip(near, labels.shape))
                    if inside and not seen[near] and labels[near] == cls:
                        seen[near] = True
                        queue.append(near)
            components.append(members)
        sizes = [len(c) for c in components]
        for index, members in enumerate(components):
            if index != int(np.argmax(sizes)):
                for voxel in members:
                    result[voxel] = 0
    return result


@pytest.mark.parametrize("seed", range(4))
def test_matches_flood_fill_on_random_volumes(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=(4, 9, 9), p=[0.55, 0.15, 0.15, 0.15]).astype(np.uint8)
    expected = slow_largest_component(labels, 4)
    assert (expected != labels).any()  # the random volume has islands to remove
    np.testing.assert_array_equal(keep_largest_component(labels, range(1, 4)), expected)


def test_far_island_removed_corner_neighbour_kept():
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[1, 2:5, 2:5] = 1
    labels[2, 5, 5] = 1  # touches the block by a corner only: the same component
    labels[0, 9, 9] = 1  # far off
    labels[0, 0:2, 8] = 2  # class 2 has a single component: unchanged
    result = keep_largest_component(labels, (1, 2))
    assert result[2, 5, 5] == 1 and result[0, 9, 9] == 0
    assert (result == 2).sum() == 2 and (result == 1).sum() == 10


def test_labels_are_the_argmax_with_the_first_class_on_ties():
    """(C, D, H, W) as `predict_volume` returns it: a permuted, non-contiguous view."""
    by_slice = torch.softmax(torch.randn(3, 4, 9, 7, generator=torch.Generator().manual_seed(0)), dim=1)
    by_slice[0, :, 0, 0] = torch.tensor([0.1, 0.4, 0.4, 0.1])  # a tie between classes 1 and 2
    probs = by_slice.permute(1, 0, 2, 3)
    labels = labels_from_probabilities(probs)
    np.testing.assert_array_equal(labels, probs.numpy().argmax(0))
    assert labels.dtype == np.uint8 and labels[0, 0, 0] == 1


def test_only_the_listed_classes_are_post_processed():
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[0, :3, :3], labels[1, 7, 7] = 1, 1  # class 1: a block and an island
    labels[0, 5:, :2], labels[1, 0, 7] = 2, 2  # class 2 too
    result = keep_largest_component(labels, [2])
    assert result[1, 7, 7] == 1 and result[1, 0, 7] == 0
    probs = torch.from_numpy(np.eye(3, dtype=np.float32)[labels]).permute(3, 0, 1, 2)
    np.testing.assert_array_equal(labels_from_probabilities(probs, [2]), result)
    np.testing.assert_array_equal(labels_from_probabilities(probs), labels)


def dice(prediction, truth):
    return 2 * (prediction & truth).sum() / (prediction.sum() + truth.sum())


def test_a_class_is_chosen_where_its_largest_component_raises_val_dice():
    """Class 1 predicts a stray island (removing it helps); class 2's truth has two pieces, which
    the prediction finds (removing one hurts); class 3 is one piece (no change: not chosen)."""
    truth = np.zeros((4, 12, 12), np.uint8)
    truth[1:3, 1:4, 1:4] = 1
    truth[1:3, 6:8, 1:3], truth[1:3, 6:7, 9:11] = 2, 2
    truth[1:3, 9:11, 5:8] = 3
    prediction = truth.copy()
    prediction[3, 11, 11] = 1
    other = truth.copy()
    other[0, 0, 11] = 1
    choice = choose_largest_component([prediction, other], [truth, truth], 4)
    assert choice["largest_component"] == [1]
    expected = {c: [np.mean([dice(p == c, truth == c) for p in pair]) for pair in
                    ((prediction, other), [keep_largest_component(p, range(1, 4)) for p in (prediction, other)])]
                for c in (1, 2, 3)}
    for c in (1, 2, 3):
        assert choice["val_dice"][str(c)] == pytest.approx(expected[c])
    assert expected[1][1] > expected[1][0] and expected[2][1] < expected[2][0] and expected[3][1] == expected[3][0]
