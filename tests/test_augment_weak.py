"""Weak augmentation: image and label move together, identity, label resizing, reproducibility."""

import math

import pytest
import torch

from mona.augment.weak import random_weak_affine, resize_images, resize_labels, warp_affine, weak_augment

B = 48


def ring_labels(batch, size, seed=0):
    """Nested discs (0 outside, 1, 2, 3 at the centre) at random centres: neighbouring classes differ
    by 1, so a bilinearly warped copy rounds to the nearest-warped label except at a few boundary pixels."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre = torch.rand(batch, 2, generator=g) * size / 3 + size / 3
    radius = torch.sqrt((yy - centre[:, 0, None, None]) ** 2 + 0.8 * (xx - centre[:, 1, None, None]) ** 2)
    label = 3 - (radius / (size / 10)).floor().clamp(0, 3)
    return torch.where(radius >= 0.4 * size, 0, label).long()


def kinds(theta):
    """Per sample: 'rot90' (a rot90 + flip, entries in {-1, 0, 1}, det -1), 'identity', or 'rotate'."""
    linear = theta[:, :, :2]
    out = []
    for m in linear:
        if torch.equal(m, torch.eye(2)):
            out.append("identity")
        elif torch.equal(m.abs().round(), m.abs()):
            assert torch.det(m).item() == pytest.approx(-1.0)
            out.append("rot90")
        else:
            out.append("rotate")
    return out


def dihedral(x):
    for k in range(4):
        y = torch.rot90(x, k, (0, 1))
        yield y
        yield y.flip(0)


def test_affine_draws_cover_the_three_kinds():
    theta = random_weak_affine(400, torch.Generator().manual_seed(0))
    assert theta.shape == (400, 2, 3) and torch.all(theta[:, :, 2] == 0)
    counts = {k: kinds(theta).count(k) for k in ("rot90", "rotate", "identity")}
    # p 0.5 rot90+flip, else p 0.5 rotation, else nothing
    assert 160 < counts["rot90"] < 240 and 60 < counts["rotate"] < 140 and 60 < counts["identity"] < 140
    rotations = [m for m, k in zip(theta[:, :, :2], kinds(theta)) if k == "rotate"]
    angles = [math.degrees(math.atan2(m[1, 0].item(), m[0, 0].item())) for m in rotations]
    assert all(-20 <= a < 20 for a in angles) and max(angles) - min(angles) > 20
    for m in rotations:  # a pure rotation: orthonormal, det +1
        assert torch.allclose(m @ m.T, torch.eye(2), atol=1e-6) and torch.det(m).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_image_and_label_move_together(size):
    label = ring_labels(B, size)
    image = label[:, None].float()
    theta = random_weak_affine(B, torch.Generator().manual_seed(1))
    warped_image, warped_label = warp_affine(theta, image, label)
    assert warped_image.shape == image.shape and warped_label.shape == label.shape and warped_label.dtype == torch.long
    seen = set()
    for i, kind in enumerate(kinds(theta)):
        seen.add(kind)
        if kind == "rotate":
            agree = (warped_image[i, 0].round() == warped_label[i]).float().mean().item()
            assert agree >= 0.95, (i, agree)
            assert not torch.equal(warped_label[i], label[i])
        else:
            # rot90 / flip / identity: the label is a pure permutation of the input's pixels,
            # and the image followed it (exactly at 32, to float rounding at other sizes)
            assert any(torch.equal(warped_label[i], t) for t in dihedral(label[i]))
            if size == 32:
                assert torch.equal(warped_image[i, 0], warped_label[i].float())
            else:
                assert torch.allclose(warped_image[i, 0], warped_label[i].float(), atol=1e-4)
    assert seen == {"rot90", "rotate", "identity"}


def test_weak_augment_matches_its_affine():
    label = ring_labels(8, 32, seed=3)
    image = torch.rand(8, 1, 32, 32)
    out_image, out_label = weak_augment(image, label, torch.Generator().manual_seed(5))
    theta = random_weak_affine(8, torch.Generator().manual_seed(5))
    ref_image, ref_label = warp_affine(theta, image, label)
    assert torch.equal(out_image, ref_image) and torch.equal(out_label, ref_label)
    only_image, none = weak_augment(image, None, torch.Generator().manual_seed(5))
    assert none is None and torch.equal(only_image, ref_image)


@pytest.mark.parametrize("size", [(32, 32), (32, 48), (64, 64)])
def test_identity_affine_is_identity(size):
    image = torch.rand(3, 2, *size)
    label = torch.randint(0, 4, (3, *size))
    theta = torch.eye(2, 3).expand(3, 2, 3)
    out_image, out_label = warp_affine(theta, image, label)
    if size == (32, 32):
        assert torch.equal(out_image, image)
    else:  # affine_grid's pixel centres carry float rounding (~4e-6) away from powers of two up to 32
        assert torch.allclose(out_image, image, atol=1e-5)
    assert torch.equal(out_label, label)


def test_reproducible_with_the_same_generator():
    image = torch.rand(6, 1, 32, 32)
    label = torch.randint(0, 4, (6, 32, 32))
    a = weak_augment(image, label, torch.Generator().manual_seed(11))
    b = weak_augment(image, label, torch.Generator().manual_seed(11))
    c = weak_augment(image, label, torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # the global RNG plays no part
    torch.manual_seed(0)
    d = weak_augment(image, label, torch.Generator().manual_seed(11))
    assert torch.equal(a[0], d[0])


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (64, 64), (256, 216)])
def test_resize_labels_keeps_only_existing_values(size):
    label = torch.zeros(2, 40, 40, dtype=torch.uint8)
    label[:, 5:20, 5:30] = 2
    label[:, 10:15, 10:15] = 5
    label[1, 30:, 30:] = 7
    out = resize_labels(label, size)
    assert out.shape == (2, *size) and out.dtype == torch.uint8
    assert set(out[0].unique().tolist()) <= {0, 2, 5}
    assert set(out.unique().tolist()) <= {0, 2, 5, 7}
    if size[0] >= 40:
        assert set(out.unique().tolist()) == {0, 2, 5, 7}
    assert resize_labels(label, (40, 40)) is label


def test_resize_images_shapes_and_linear_values():
    image = torch.rand(2, 4, 40, 30)
    out = resize_images(image, (64, 48))
    assert out.shape == (2, 4, 64, 48)
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
    probs = torch.softmax(torch.randn(1, 4, 20, 20), 1)
    assert torch.allclose(resize_images(probs, (33, 17)).sum(1), torch.ones(1, 33, 17), atol=1e-5)
