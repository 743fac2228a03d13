import doctest
import math

import pytest
import torch

import mona.losses.supervised as supervised_module
from mona.losses import SupervisedSegLoss

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def reference_ce_dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """SSL4MIS CrossEntropyLoss + DiceLoss(softmax=True), pixel by pixel in float64."""
    b, c, h, w = logits.shape
    logits = logits.double()
    ce = 0.0
    intersect, pred_sq, target_sq = [0.0] * c, [0.0] * c, [0.0] * c
    for i in range(b):
        for y in range(h):
            for x in range(w):
                scores = [float(logits[i, k, y, x]) for k in range(c)]
                top = max(scores)
                norm = sum(math.exp(s - top) for s in scores)
                probs = [math.exp(s - top) / norm for s in scores]
                truth = int(labels[i, y, x])
                ce -= math.log(probs[truth])
                for k in range(c):
                    onehot = 1.0 if k == truth else 0.0
                    intersect[k] += probs[k] * onehot
                    pred_sq[k] += probs[k] ** 2
                    target_sq[k] += onehot
    ce /= b * h * w
    dice = sum(1 - (2 * intersect[k] + 1e-5) / (pred_sq[k] + target_sq[k] + 1e-5) for k in range(c)) / c
    return ce + dice


def test_docstring_examples_run():
    result = doctest.testmod(supervised_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("device", DEVICES)
def test_matches_ssl4mis_reference(device):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=generator) * 2
    labels = torch.randint(0, 4, (2, 5, 6), generator=generator)
    labels[:, 0, 0] = 3  # every class is present at least once ...
    labels[0, 1, 1] = 2
    labels[1] = torch.where(labels[1] == 1, 0, labels[1])  # ... but class 1 only in image 0
    loss = SupervisedSegLoss()(logits.to(device), labels.to(device))
    assert loss.shape == ()
    assert float(loss) == pytest.approx(reference_ce_dice(logits, labels), rel=1e-5)


def test_background_counts_in_the_dice_average():
    logits = torch.full((1, 2, 4, 4), -10.0)
    logits[:, 0] = 10.0  # confident background everywhere
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = 1  # one foreground pixel, missed
    loss = SupervisedSegLoss(ce_weight=0.0)(logits, labels)
    # background Dice ~ 30/31, foreground Dice ~ 0: averaged over both classes
    assert float(loss) == pytest.approx((1 - 30 / 31 + 1) / 2, abs=1e-3)


def test_weights_and_gradient():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    both = SupervisedSegLoss()(logits, labels)
    ce = SupervisedSegLoss(dice_weight=0.0)(logits, labels)
    dice = SupervisedSegLoss(ce_weight=0.0)(logits, labels)
    torch.testing.assert_close(both, ce + dice)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, labels))
    both.backward()
    assert logits.grad.abs().sum() > 0


def test_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (2, 8, 8), generator=generator)
    expected = SupervisedSegLoss()(logits, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same_input = SupervisedSegLoss()(logits, labels)
        bf16_input = SupervisedSegLoss()(logits.bfloat16(), labels)
    assert same_input.dtype == torch.float32 and bf16_input.dtype == torch.float32
    torch.testing.assert_close(same_input, expected)
    torch.testing.assert_close(bf16_input, expected, rtol=2e-2, atol=2e-2)


def test_rejects_one_hot_labels():
    with pytest.raises(ValueError):
        SupervisedSegLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.long))


def test_bit_identical_to_monai_dice_ce():
    """The loss is MONAI's DiceCELoss written out (MONAI's reads its axes on the host, ending a compiled
    graph): values and gradients equal bit for bit, so runs trained with MONAI's loss replay exactly."""
    from monai.losses import DiceCELoss

    monai_loss = DiceCELoss(include_background=True, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                            smooth_nr=1e-5, smooth_dr=1e-5, lambda_ce=0.5, lambda_dice=0.7)
    generator = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 4, 16, 16, generator=generator) * 3).requires_grad_()
    labels = torch.randint(0, 4, (3, 16, 16), generator=generator)
    ours = SupervisedSegLoss(ce_weight=0.5, dice_weight=0.7)(logits, labels)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    theirs = monai_loss(logits, labels.unsqueeze(1))
    (theirs_grad,) = torch.autograd.grad(theirs, logits)
    assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)


def test_compiles_into_one_graph():
    explained = torch._dynamo.explain(SupervisedSegLoss())(torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8)))
    assert explained.graph_count == 1 and explained.graph_break_count == 0
