import torch

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


def test_diffeomorphism_is_orientation_preserving_and_identity_at_zero():
    grid = random_diffeomorphism(_gen(2), 4, (48, 64))
    assert grid.shape == (4, 48, 64, 2)
    assert (_jacobian_determinant(grid) > 0).all()
    assert (grid - identity_grid(4, (48, 64), "cpu")).abs().amax() > 0.05
    still = random_diffeomorphism(_gen(2), 2, 32, magnitude=0.0)
    torch.testing.assert_close(still, identity_grid(2, 32, "cpu"), atol=1e-6, rtol=0)
    image = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(apply_grid(still, image)[0], image, atol=1e-5, rtol=0)


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
