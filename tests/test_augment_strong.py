import pytest
import torch
import torch.nn.functional as F

from mona.augment.strong import (
    StrongAugment,
    apply_grid,
    color_jitter,
    cutmix,
    gaussian_blur,
    photometric_view,
    random_diffeomorphism,
)
from mona.augment.warp import identity_grid


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _disk_batch(batch=4, size=64):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.tensor([[20, 24], [32, 32], [40, 28], [26, 40]])[:batch]
    radii = torch.tensor([10, 14, 9, 12])[:batch]
    dist = ((ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2).float()
    label = (dist <= radii[:, None, None].float() ** 2).long()
    image = label.float()[:, None] * 0.8 + 0.1
    confidence = label.float() * 0.5 + 0.5
    return image, label, confidence


def _iou(a, b):
    return (a & b).sum().item() / (a | b).sum().item()


def _jacobian_determinant(grid):
    height, width = grid.shape[1:3]
    pixels = (grid + 1) * torch.tensor([width, height]) / 2 - 0.5
    dx = pixels[:, :-1, 1:] - pixels[:, :-1, :-1]
    dy = pixels[:, 1:, :-1] - pixels[:, :-1, :-1]
    return dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]


def test_diffeomorphism_moves_image_label_and_confidence_identically():
    image, label, confidence = _disk_batch()
    grid = random_diffeomorphism(_gen(1), 4, 64)
    warped_image, warped_label, warped_confidence = apply_grid(grid, image, label, confidence)
    assert not torch.equal(warped_label, label)
    assert _iou(warped_image[:, 0] > 0.5, warped_label > 0) > 0.95
    assert _iou(warped_confidence > 0.75, warped_label > 0) > 0.95
    assert warped_label.dtype == torch.long and set(warped_label.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("reading", ["advmorph", "rms_cells"])
def test_diffeomorphism_is_orientation_preserving_and_identity_at_zero(reading):
    grid = random_diffeomorphism(_gen(2), 4, (48, 64), magnitude=5.0 if reading == "advmorph" else 1.5,
                                 reading=reading)
    assert grid.shape == (4, 48, 64, 2)
    determinant = _jacobian_determinant(grid)
    assert (determinant[:, 4:-4, 4:-4] > 0).all() and (determinant > -1e-6).all()  # advmorph clamps at the edge
    assert (grid - identity_grid(4, (48, 64), "cpu")).abs().amax() > 0.05
    still = random_diffeomorphism(_gen(2), 2, 32, magnitude=0.0, reading=reading)
    torch.testing.assert_close(still, identity_grid(2, 32, "cpu"), atol=1e-6, rtol=0)
    image = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(apply_grid(still, image)[0], image, atol=1e-5, rtol=0)


def _gaussian_1_cell(field):
    """advchain's smoothing: a 9x9 Gaussian of sigma 1, zero-padded, per channel."""
    taps = torch.arange(9.0) - 4
    kernel = torch.exp(-(taps[:, None] ** 2 + taps[None] ** 2) / 2)
    kernel = (kernel / kernel.sum()).expand(field.shape[1], 1, 9, 9)
    return F.conv2d(field, kernel, padding=4, groups=field.shape[1])


def advmorph_displacement(generator, batch, size, vector_size=32, epsilon=1.5, steps=8):
    """A re-implementation of the displacement of advchain's AdvMorph (cherise215/advchain,
    advchain/augmentor/adv_morph.py), as the authors' code calls it for MONA's strong view
    (epsilon 1.5, vector_size = size // 8): in its frame (align_corners=True), (B, 2, H, W) in pixels.

    Velocity U(-1, 1) on a vector_size grid, L2-normalised per sample and scaled by epsilon,
    smoothed (sigma 1), upsampled bilinearly, exponentiated by `steps` squarings of the
    position map, composed with the identity (border), smoothed again and clamped to [-1, 1].
    """
    velocity = torch.rand(batch, 2, vector_size, vector_size, generator=generator) * 2 - 1
    velocity = epsilon * velocity / velocity.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    velocity = F.interpolate(_gaussian_1_cell(velocity), size=(size, size), mode="bilinear", align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    base = torch.stack([xs, ys]).expand(batch, -1, -1, -1)
    phi = base + velocity / 2**steps
    for _ in range(steps):
        phi = F.grid_sample(phi, phi.permute(0, 2, 3, 1), padding_mode="border", align_corners=True)
    composed = F.grid_sample(base, phi.permute(0, 2, 3, 1), padding_mode="border", align_corners=True)
    composed = (_gaussian_1_cell(composed - base) + base).clamp(-1, 1)
    return (composed - base) * (size - 1) / 2


def _our_displacement(grid):
    """(B, H, W, 2) sampling grid -> (B, 2, H, W) displacement in pixels."""
    height, width = grid.shape[1:3]
    shift = grid - identity_grid(grid.shape[0], (height, width), "cpu")
    return (shift * torch.tensor([width / 2, height / 2])).permute(0, 3, 1, 2)


def _rms_and_max(displacement):
    """RMS displacement length over all pixels, and the mean over images of each image's largest."""
    length = displacement.square().sum(dim=1).sqrt()
    return float(length.square().mean().sqrt()), float(length.flatten(1).amax(dim=1).mean())


def test_strong_view_moves_pixels_as_far_as_advmorph_at_256():
    # The reference itself, measured on 64 images: 1.51 px RMS, 3.92 px largest per image
    # (5.32 px over all 64), against 16.4 / 39.5 / 52.1 px for the earlier "rms_cells" reading.
    reference_rms, reference_max = _rms_and_max(advmorph_displacement(_gen(0), 16, 256))
    assert reference_rms == pytest.approx(1.51, rel=0.1) and reference_max == pytest.approx(3.92, rel=0.1)
    ours = _our_displacement(random_diffeomorphism(_gen(1), 16, 256))
    rms, largest = _rms_and_max(ours)
    assert rms == pytest.approx(reference_rms, rel=0.2) and largest == pytest.approx(reference_max, rel=0.2)
    old_rms, old_max = _rms_and_max(_our_displacement(random_diffeomorphism(_gen(1), 4, 256, reading="rms_cells")))
    assert old_rms > 8 * reference_rms and old_max > 8 * reference_max


def test_strong_view_draws_advmorph_fields():
    # the same uniform draws give the same field: to 0.01 px inside, to 0.25 px at the border
    # (AdvMorph composes positions, which clamps flows leaving the image at every squaring)
    reference = advmorph_displacement(_gen(3), 4, 256)
    ours = _our_displacement(random_diffeomorphism(_gen(3), 4, 256))
    assert (reference - ours)[..., 8:-8, 8:-8].abs().max() < 0.01
    assert (reference - ours).abs().max() < 0.3


def test_cutmix_mixes_labels_and_confidences_exactly_where_pixels_are_pasted():
    batch, height, width = 4, 24, 32
    image = torch.rand(batch, 1, height, width)
    owner = torch.arange(batch)[:, None, None].expand(batch, height, width).clone()
    confidence = torch.rand(batch, height, width)
    mixed_image, mixed_label, mixed_confidence, box = cutmix(image, owner, confidence, _gen(3))
    assert box.dtype == torch.bool and box.shape == (batch, height, width)
    assert (box.sum(dim=(1, 2)) - height * width / 2).abs().max() <= width
    assert torch.equal(mixed_label == owner, ~box)
    for b in range(batch):
        source = mixed_label[b][box[b]]
        assert (source == source[0]).all() and source[0] != b
        assert torch.equal(mixed_image[b, 0][box[b]], image[source[0], 0][box[b]])
        assert torch.equal(mixed_confidence[b][box[b]], confidence[source[0]][box[b]])
        assert torch.equal(mixed_image[b, 0][~box[b]], image[b, 0][~box[b]])
        assert torch.equal(mixed_confidence[b][~box[b]], confidence[b][~box[b]])


def test_strong_augment_keeps_pseudo_labels_on_the_anatomy():
    image, label, confidence = _disk_batch()
    augment = StrongAugment(jitter_p=0.0, blur_p=0.0, deform_p=1.0)
    out_image, out_label, out_confidence = augment(image, label, confidence, _gen(4))
    assert _iou(out_image[:, 0] > 0.5, out_label > 0) > 0.95
    assert _iou(out_confidence > 0.75, out_label > 0) > 0.95
    assert out_image.shape == image.shape and out_label.dtype == torch.long


def test_strong_augment_is_reproducible_and_can_be_disabled():
    image, label, confidence = _disk_batch()
    augment = StrongAugment(jitter_p=1.0, blur_p=1.0, deform_p=1.0)
    first = augment(image, label, confidence, _gen(0))
    second = augment(image, label, confidence, _gen(0))
    other = augment(image, label, confidence, _gen(1))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[0], image)
    off = StrongAugment(enabled=False)(image, label, confidence, _gen(0))
    assert off[0] is image and off[1] is label and off[2] is confidence


def test_photometric_view_leaves_its_input_alone():
    image = torch.rand(6, 1, 32, 32)
    before = image.clone()
    views = [photometric_view(image, _gen(seed)) for seed in range(4)]
    assert torch.equal(image, before)
    assert all(view.data_ptr() != image.data_ptr() for view in views)
    assert any(not torch.equal(view, image) for view in views)
    assert torch.equal(views[0], photometric_view(image, _gen(0)))


def test_jitter_and_blur_stay_within_their_ranges():
    image = torch.rand(8, 1, 32, 32) * 0.5 + 0.25
    jittered = color_jitter(image, _gen(5), p=1.0, low=1.25, high=1.25)
    mean = (image * 1.25).mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(jittered, ((image * 1.25 - mean) * 1.25 + mean).clamp(0, 1), atol=1e-5, rtol=0)
    assert torch.equal(color_jitter(image, _gen(5), p=0.0), image)
    blurred = gaussian_blur(image, _gen(6), p=1.0)
    assert (blurred.std(dim=(1, 2, 3)) < image.std(dim=(1, 2, 3))).all()
    assert torch.equal(gaussian_blur(image, _gen(6), p=0.0), image)


def test_bf16_inputs_keep_their_dtype():
    image, label, confidence = _disk_batch()
    out = StrongAugment(jitter_p=1.0, blur_p=1.0, deform_p=1.0)(image.bfloat16(), label, confidence.bfloat16(), _gen(7))
    assert out[0].dtype == torch.bfloat16 and out[2].dtype == torch.bfloat16 and out[1].dtype == torch.long
    assert torch.isfinite(out[0].float()).all()
    assert photometric_view(image.bfloat16(), _gen(8)).dtype == torch.bfloat16
