import doctest
import math

import pytest
import torch

import mona.losses.contrast as contrast_module
from mona.losses import AnatomicalContrastLoss, ClassMemoryBank
from mona.randomness import device_generator

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
Q, N, TEMP = 4, 5, 0.5


def reference_select(labels, probs, labeled, progress, entropy_split="spec"):
    """Anchor/negative masks pixel by pixel. "spec": the m = max(ceil(n alpha_t / 100), 1) most
    certain unlabeled pixels may be anchors and the m most uncertain negatives, labeled pixels
    are not gated; "one_cut": one split of all pixels at the (100 - alpha_t) percentile. Then the
    top-3 window on labeled slices, ranks >= min(3, C - 1) on unlabeled ones."""
    b, c, h, w = probs.shape
    pixels = [(i, y, x) for i in range(b) for y in range(h) for x in range(w)]
    entropy = {}
    for i, y, x in pixels:
        entropy[i, y, x] = -sum(float(p) * math.log(float(p)) for p in probs[i, :, y, x] if p > 0)
    alpha = 20.0 * (1.0 - progress)
    if entropy_split == "one_cut":
        ordered = sorted(entropy.values())
        k = min(max(math.ceil(len(ordered) * (100 - alpha) / 100), 1), len(ordered))
        low = high = ordered[k - 1]
        gated = pixels
    else:
        ordered = sorted(entropy[i, y, x] for i, y, x in pixels if not labeled[i])
        m = min(max(math.ceil(len(ordered) * alpha / 100), 1), len(ordered))
        low, high = ordered[m - 1], ordered[-m]
        gated = [(i, y, x) for i, y, x in pixels if not labeled[i]]
    certain = {pixel: pixel not in gated or entropy[pixel] <= low for pixel in pixels}
    uncertain = {pixel: pixel not in gated or entropy[pixel] >= high for pixel in pixels}
    anchors = torch.zeros(b, c, h, w, dtype=torch.bool)
    negatives = torch.zeros(b, c, h, w, dtype=torch.bool)
    for i, y, x in pixels:
        p = [float(v) for v in probs[i, :, y, x]]
        for cls in range(c):
            rank = sum(1 for other in p if other > p[cls])
            if labels[i, y, x] == cls and certain[i, y, x] and p[cls] > 0.3:
                anchors[i, cls, y, x] = True
            if labeled[i]:
                hard = rank < min(3, c) and labels[i, y, x] != cls
            else:
                hard = rank >= min(3, c - 1)
            if hard and uncertain[i, y, x] and p[cls] < 0.97:
                negatives[i, cls, y, x] = True
    return anchors, negatives


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v.double() / v.double().norm()


def reference_loss(student, teacher, labels, probs, labeled, progress, bank_rows, generator, bank_device="cpu",
                   num_queries=Q, num_negatives=N):
    """Loop reference of the loss; `bank_rows` is a list per class of stored unit vectors
    (no wrap-around), extended in place like the FIFO bank. Negatives are drawn where a bank
    on `bank_device` draws them (`device_generator`)."""
    b, d, h, w = student.shape
    anchors, negatives = reference_select(labels, probs, labeled, progress)
    pixels = [(i, y, x) for i in range(b) for y in range(h) for x in range(w)]
    losses = []
    for cls in range(probs.shape[1]):
        bank_rows[cls].extend(_unit(teacher[i, :, y, x]).float() for i, y, x in pixels if negatives[i, cls, y, x])
        candidates = [(i, y, x) for i, y, x in pixels if anchors[i, cls, y, x]]
        if not candidates or not bank_rows[cls]:
            continue
        prototype = _unit(sum(_unit(teacher[i, :, y, x]) for i, y, x in candidates))
        draws = torch.randint(len(candidates), (num_queries,), generator=generator)
        negative_draws = torch.randint(len(bank_rows[cls]), (num_queries * num_negatives,),
                                       generator=device_generator(generator, bank_device), device=bank_device).cpu()
        total = 0.0
        for q in range(num_queries):
            i, y, x = candidates[int(draws[q])]
            query = _unit(student[i, :, y, x])
            logits = [float(query @ prototype) / TEMP]
            logits += [float(query @ bank_rows[cls][int(negative_draws[q * num_negatives + j])].double()) / TEMP
                       for j in range(num_negatives)]
            top = max(logits)
            total += -logits[0] + top + math.log(sum(math.exp(v - top) for v in logits))
        losses.append(total / num_queries)
    return sum(losses) / len(losses)


def _batch(seed: int, num_classes: int = 4, b: int = 2, d: int = 6, h: int = 5, w: int = 6):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(b, num_classes, h, w, generator=generator) * 2.5, dim=1)
    labels = probs.argmax(dim=1)
    labels[0] = torch.randint(0, num_classes, (h, w), generator=generator)  # image 0: "ground truth"
    student = torch.randn(b, d, h, w, generator=generator)
    teacher = student + 0.5 * torch.randn(b, d, h, w, generator=generator)
    labeled = torch.tensor([True] + [False] * (b - 1))
    return student, teacher, labels, probs, labeled


def _prefilled(num_classes: int, d: int, seed: int):
    """A bank of 3 random rows per class, and the same rows as reference lists."""
    generator = torch.Generator().manual_seed(seed)
    bank = ClassMemoryBank([200] * num_classes, dim=d)
    rows = []
    for cls in range(num_classes):
        x = torch.randn(3, d, generator=generator)
        bank.push(cls, x)
        rows.append([_unit(r).float() for r in x])
    return bank, rows


def test_docstring_examples_run():
    result = doctest.testmod(contrast_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("entropy_split", ["spec", "one_cut"])
@pytest.mark.parametrize("num_classes", [2, 3, 4, 6])
@pytest.mark.parametrize("progress", [0.0, 0.6, 1.0])
def test_select_matches_pixel_loop(num_classes, progress, entropy_split):
    _, _, labels, probs, labeled = _batch(num_classes + int(10 * progress), num_classes, b=3)
    loss_fn = AnatomicalContrastLoss(entropy_split=entropy_split)
    anchors, negatives = loss_fn.select(labels, probs, labeled, progress)
    expected_anchors, expected_negatives = reference_select(labels, probs, labeled, progress, entropy_split)
    assert torch.equal(anchors, expected_anchors)
    assert torch.equal(negatives, expected_negatives)
    assert anchors.any()


def test_unlabeled_negatives_exist_for_three_classes():
    _, _, labels, probs, _ = _batch(5, num_classes=3, b=2, h=8, w=8)
    _, negatives = AnatomicalContrastLoss().select(labels, probs, torch.tensor([False, False]), 0.0)
    # the authors' fixed rank window 3..19 is empty for C = 3 (spec defect 6)
    assert negatives.any()
    assert all(negatives[:, c].any() for c in range(3))


def _entropy(probs):
    return -torch.special.xlogy(probs, probs).sum(dim=1)


@pytest.mark.parametrize("progress", [0.0, 0.5, 0.99, 1.0])
def test_spec_split_takes_the_alpha_most_certain_and_uncertain_unlabeled_pixels(progress):
    _, _, labels, probs, _ = _batch(6, b=2, h=16, w=16)
    labeled = torch.tensor([True, False])
    loss_fn = AnatomicalContrastLoss(anchor_threshold=0.0, negative_threshold=1.0, unlabeled_rank_start=0)
    anchors, negatives = loss_fn.select(labels, probs, labeled, progress)
    entropy = _entropy(probs)[1].flatten()
    share = math.ceil(256 * 20 * (1 - progress) / 100) or 1  # the alpha_t %, at least one pixel (no empty set)
    assert torch.equal(anchors[1].any(dim=0).flatten(), entropy <= entropy.sort().values[share - 1])
    assert torch.equal(negatives[1].any(dim=0).flatten(), entropy >= entropy.sort().values[-share])
    assert int(anchors[1].any(dim=0).sum()) == share  # continuous entropies: no ties
    # labeled pixels are not gated by entropy: every pixel is an anchor of its truth, at any t
    assert torch.equal(anchors[0], labels[0] == torch.arange(4).view(4, 1, 1))


def test_spec_split_keeps_the_banks_filling_at_the_end_of_the_run():
    student, teacher, labels, probs, labeled = _batch(7, b=4, h=16, w=16)
    labeled = torch.tensor([True, True, False, False])
    counts = {}
    for split in ("spec", "one_cut"):
        bank = ClassMemoryBank([10**6] * 4, dim=6)
        AnatomicalContrastLoss(num_queries=4, num_negatives=4, entropy_split=split)(
            student, teacher, labels, probs, labeled, 1.0, bank, torch.Generator().manual_seed(0))
        counts[split] = sum(bank.filled(c) for c in range(4))
    assert counts["one_cut"] <= 3  # the earlier reading: the single most uncertain pixel of the batch
    assert counts["spec"] > 500  # the labeled half: every pixel, for the other classes of its top 3


def test_one_cut_split_releases_anchors_over_the_run():
    _, _, labels, probs, labeled = _batch(6, b=2, h=8, w=8)
    loss_fn = AnatomicalContrastLoss(entropy_split="one_cut")
    start, _ = loss_fn.select(labels, probs, labeled, 0.0)
    end, negatives_end = loss_fn.select(labels, probs, labeled, 1.0)
    eligible = (labels.unsqueeze(1) == torch.arange(4).view(1, 4, 1, 1)) & (probs > 0.3)
    assert torch.equal(end, eligible)  # alpha_T = 0: no pixel is unreliable
    assert start.sum() < end.sum()
    assert int(negatives_end.any(dim=1).sum()) <= 1  # only the most uncertain pixel remains


def test_push_keeps_the_newest_negatives_that_fit():
    student, teacher, labels, probs, labeled = _batch(8, b=2, h=8, w=8)
    loss_fn = AnatomicalContrastLoss(num_queries=4, num_negatives=4)
    _, negatives = loss_fn.select(labels, probs, labeled, 0.0)
    small, large = ClassMemoryBank([5] * 4, dim=6), ClassMemoryBank([1000] * 4, dim=6)
    for bank in (small, large):
        loss_fn(student, teacher, labels, probs, labeled, 0.0, bank, torch.Generator().manual_seed(0))
    for cls in range(4):
        assert large.filled(cls) == int(negatives[:, cls].sum())
        if large.filled(cls) >= 5:
            torch.testing.assert_close(small.queues[cls].items(), large.queues[cls].items()[-5:])


def test_rejects_an_unknown_entropy_split():
    with pytest.raises(ValueError, match="entropy_split"):
        AnatomicalContrastLoss(entropy_split="half")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_classes", [3, 4])
@pytest.mark.parametrize("queries, negatives", [(Q, N), (70, 3)])  # 70: gathered in pieces of 32, 32, 6 on the CPU
def test_loss_matches_loop_reference(device, num_classes, queries, negatives):
    student, teacher, labels, probs, labeled = _batch(10 + num_classes, num_classes)
    bank, rows = _prefilled(num_classes, 6, seed=1)
    expected = reference_loss(student, teacher, labels, probs, labeled, 0.3, rows, torch.Generator().manual_seed(7),
                              device, queries, negatives)
    loss_fn = AnatomicalContrastLoss(num_queries=queries, num_negatives=negatives, temperature=TEMP)
    bank = bank.to(device)
    loss = loss_fn(
        *(x.to(device) for x in (student, teacher, labels, probs, labeled)), 0.3, bank, torch.Generator().manual_seed(7)
    )
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    for cls in range(num_classes):  # the bank received exactly the reference's negatives, in order
        assert bank.filled(cls) == len(rows[cls])
        torch.testing.assert_close(bank.queues[cls].items().cpu(), torch.stack(rows[cls]), rtol=1e-5, atol=1e-6)


def test_gradient_reaches_student_only():
    student, teacher, labels, probs, labeled = _batch(20)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    probs.requires_grad_(True)
    bank, _ = _prefilled(4, 6, seed=2)
    loss = AnatomicalContrastLoss(num_queries=Q, num_negatives=N)(
        student, teacher, labels, probs, labeled, 0.2, bank, torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert loss.item() > 0
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None and probs.grad is None


def test_no_anchors_gives_graph_zero_and_still_fills_bank():
    student, teacher, labels, probs, labeled = _batch(21)
    student.requires_grad_(True)
    bank = ClassMemoryBank([100] * 4, dim=6)
    loss = AnatomicalContrastLoss(anchor_threshold=1.0)(student, teacher, labels, probs, labeled, 0.0, bank)
    loss.backward()
    assert loss.item() == 0.0 and float(student.grad.abs().sum()) == 0.0
    assert sum(bank.filled(c) for c in range(4)) > 0


def test_same_generator_seed_same_loss():
    student, teacher, labels, probs, labeled = _batch(22)
    loss_fn = AnatomicalContrastLoss(num_queries=8, num_negatives=8)
    values = []
    for _ in range(2):
        bank, _ = _prefilled(4, 6, seed=3)
        values.append(loss_fn(student, teacher, labels, probs, labeled, 0.1, bank, torch.Generator().manual_seed(5)))
    assert float(values[0]) == float(values[1])


def test_float32_under_bf16_autocast():
    student, teacher, labels, probs, labeled = _batch(23)
    loss_fn = AnatomicalContrastLoss(num_queries=8, num_negatives=8)

    def run(*tensors):
        bank, _ = _prefilled(4, 6, seed=4)
        return loss_fn(*tensors, labels, probs, labeled, 0.1, bank, torch.Generator().manual_seed(9))

    expected = run(student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = run(student, teacher)
        low = run(student.bfloat16(), teacher.bfloat16())
    assert same.dtype == low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(same, expected)
    torch.testing.assert_close(low, expected, rtol=3e-2, atol=3e-2)


def test_rejects_mismatched_bank():
    student, teacher, labels, probs, labeled = _batch(24)
    with pytest.raises(ValueError):
        AnatomicalContrastLoss()(student, teacher, labels, probs, labeled, 0.0, ClassMemoryBank([10] * 3, dim=6))
