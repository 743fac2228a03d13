"""ABD's displacement, batched, against a loop that follows the official `ABD_R_BCP` step by step."""

import pytest
import torch
import torch.nn.functional as F

from mona.augment.displacement import adaptive_bidirectional_displacement, from_patches, to_patches


def reference_displacement(images_1, images_2, confidence_1, confidence_2, logits_1, logits_2, adaptive, grid, top_k):
    """One image at a time, patch indices by explicit loops over rows and columns of the grid."""
    batch, _, height, width = images_1.shape
    ph, pw = height // grid, width // grid

    def patches(image):  # list of grid*grid (ph, pw) crops, row by row
        return [image[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].clone() for r in range(grid) for c in range(grid)]

    def scores(confidence):
        return torch.stack([p.mean() for p in patches(confidence)])

    def profiles(logits):  # (grid*grid, C): mean logit per patch and class
        return torch.stack([torch.stack([p.mean() for p in patches(logits[c])]) for c in range(logits.shape[0])], 1)

    out_1, out_2 = [], []
    for i in range(batch):
        view_1, view_2 = patches(images_1[i, 0]), patches(images_2[i, 0])
        s1, s2 = scores(confidence_1[i]), scores(confidence_2[i])
        b, d = int(s1.argmin()), int(s2.argmin())
        if adaptive[i]:
            top_1, top_2 = s1.topk(top_k).indices, s2.topk(top_k).indices
            prof_1, prof_2 = profiles(logits_1[i]), profiles(logits_2[i])
            kl_1 = [F.kl_div(prof_1[j].softmax(-1).log(), prof_2[d].softmax(-1), reduction="sum") for j in top_1]
            kl_2 = [F.kl_div(prof_2[j].softmax(-1).log(), prof_1[b].softmax(-1), reduction="sum") for j in top_2]
            a, c = int(top_1[int(torch.stack(kl_1).argmin())]), int(top_2[int(torch.stack(kl_2).argmin())])
        else:
            a, c = int(s1.argmax()), int(s2.argmax())
        view_1[b] = view_2[c].clone()
        view_2[d] = view_1[a].clone()  # read after the first write
        for view, out in ((view_1, out_1), (view_2, out_2)):
            rows = [torch.cat(view[r * grid:(r + 1) * grid], dim=1) for r in range(grid)]
            out.append(torch.cat(rows, dim=0))
    return torch.stack(out_1 + out_2)[:, None]


def test_patches_are_numbered_row_by_row_and_invert():
    image = torch.arange(64.0).reshape(1, 8, 8)
    patches = to_patches(image, 4)
    assert patches.shape == (1, 16, 4)
    assert torch.equal(patches[0, 1], torch.tensor([2.0, 3.0, 10.0, 11.0]))  # row block 0, column block 1
    assert torch.equal(patches[0, 4], torch.tensor([16.0, 17.0, 24.0, 25.0]))  # row block 1, column block 0
    assert torch.equal(from_patches(patches, 4, (8, 8)), image)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid,top_k", [(4, 4), (2, 2)])
def test_displacement_equals_the_official_loop(seed, grid, top_k):
    generator = torch.Generator().manual_seed(seed)
    batch, size = 5, 16
    images_1, images_2 = torch.rand(batch, 1, size, size, generator=generator), torch.rand(batch, 1, size, size,
                                                                                             generator=generator)
    logits_1, logits_2 = (torch.randn(batch, 4, size, size, generator=generator) * 2 for _ in range(2))
    confidence_1, confidence_2 = (torch.softmax(x, 1).amax(1) for x in (logits_1, logits_2))
    chosen = torch.tensor([True, False, True, False, True])
    adaptive = torch.rand(batch, generator=generator) < 0.5 if seed % 2 else chosen
    ours = adaptive_bidirectional_displacement(images_1, images_2, confidence_1, confidence_2, logits_1, logits_2,
                                               adaptive, grid, top_k)
    reference = reference_displacement(images_1, images_2, confidence_1, confidence_2, logits_1, logits_2,
                                       adaptive, grid, top_k)
    assert ours.shape == (2 * batch, 1, size, size)
    assert torch.equal(ours, reference)
    # one patch of each image changed, the rest untouched
    patch_pixels = (size // grid) ** 2
    assert ((ours[:batch] != images_1).flatten(1).sum(1) <= patch_pixels).all()
    assert ((ours[batch:] != images_2).flatten(1).sum(1) <= patch_pixels).all()
