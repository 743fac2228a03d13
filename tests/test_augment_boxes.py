"""Copy-paste, CutMix and cutout boxes: their laws, and pasting through them pixel by pixel."""

import pytest
import torch

from mona.augment.boxes import copy_paste_box, paste, random_boxes


def box_extent(mask):
    rows, cols = torch.nonzero(mask, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    return top, left, int(rows.max()) + 1 - top, int(cols.max()) + 1 - left


def test_copy_paste_box_is_two_thirds_of_each_side_placed_as_numpy_randint():
    """BCP at 256 px: a 170 x 170 box, top-left in 0..85; here 12 px: 8 x 8, top-left in 0..3."""
    generator = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(200):
        box = copy_paste_box((12, 12), generator)
        top, left, height, width = box_extent(box)
        assert box.dtype == torch.bool and (height, width) == (8, 8) and int(box.sum()) == 64
        corners.add((top, left))
    assert corners == {(top, left) for top in range(4) for left in range(4)}
    assert box_extent(copy_paste_box((256, 256), generator))[2:] == (170, 170)


@pytest.mark.parametrize("redraw_area", [False, True])
def test_random_boxes_fit_with_the_drawn_area_and_ratio(redraw_area):
    generator = torch.Generator().manual_seed(1)
    masks = random_boxes(400, (64, 64), generator, p=0.5, redraw_area=redraw_area)
    filled = masks.flatten(1).any(1)
    assert 0.4 < filled.float().mean() < 0.6  # p = 0.5
    for mask in masks[filled]:
        top, left, height, width = box_extent(mask)
        area = int(mask.sum())
        assert area == height * width  # one rectangle
        assert 0.02 * 64 * 64 * 0.6 <= area <= 0.4 * 64 * 64  # int() truncation only shrinks it
        assert 0.3 / 1.5 <= height / width <= 1.5 / 0.3
    assert not random_boxes(5, (16, 16), generator, p=0.0).any()
    assert random_boxes(5, (16, 16), generator, p=1.0).flatten(1).any(1).all()


def test_paste_takes_the_source_inside_the_box_only():
    background, source = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    box = torch.zeros(4, 4, dtype=torch.bool)
    box[1:3, 0:2] = True
    mixed = paste(background, source, box)
    assert torch.equal(mixed[:, 0], box.float().expand(2, 4, 4))
    per_sample = torch.stack([box, ~box])
    labels = paste(torch.full((2, 4, 4), 7), torch.full((2, 4, 4), 9), per_sample)
    assert torch.equal(labels[0], torch.where(box, 9, 7)) and torch.equal(labels[1], torch.where(~box, 9, 7))
