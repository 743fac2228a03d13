"""Slice-wise volume prediction: probabilities at the volume's own size, with and without TTA."""

import numpy as np
import pytest
import torch

from mona.evaluation.inference import dice_per_class, predict_volume
from mona.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(1, 4)


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).random((3, 40, 56), dtype=np.float32)


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_at_the_volume_size(model, volume, tta):
    model.train()
    probs = predict_volume(model, volume, 32, CPU, tta=tta)
    assert model.training  # the model's mode is restored
    assert probs.shape == (4, 3, 40, 56) and probs.device == CPU and probs.dtype == torch.float32
    assert probs.min() >= 0 and probs.max() <= 1
    assert torch.allclose(probs.sum(0), torch.ones(3, 40, 56), atol=1e-5)


def test_chunking_and_tta(model, volume):
    one = predict_volume(model, volume, 32, CPU, batch_size=1)
    assert torch.allclose(one, predict_volume(model, volume, 32, CPU, batch_size=32), atol=1e-5)
    tta = predict_volume(model, volume, 32, CPU, tta=True)
    assert not torch.allclose(one, tta, atol=1e-4)  # the flips are averaged in


def test_tta_of_a_flip_invariant_model_changes_nothing(volume):
    class Mean(torch.nn.Module):
        """Logits from the slice mean: invariant to flips."""

        def forward(self, x):
            from mona.models.unet import UNetOutput

            logits = torch.cat([x, x.mean((2, 3), keepdim=True).expand_as(x), -x, x * 0], 1)
            return UNetOutput(logits, None, [])

    model = Mean()
    flat = np.ones_like(volume) * 0.5
    plain = predict_volume(model, flat, 32, CPU)
    assert torch.allclose(plain, predict_volume(model, flat, 32, CPU, tta=True), atol=1e-6)


def test_volume_of_the_network_size_is_not_resized(model):
    volume = np.random.default_rng(1).random((2, 32, 32), dtype=np.float32)
    probs = predict_volume(model, volume, 32, CPU)
    model.eval()
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(volume)[:, None]).logits, 1).permute(1, 0, 2, 3)
    assert torch.allclose(probs, direct, atol=1e-6)


def test_dice_per_class():
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[:, :4] = 1
    pred = truth.copy()
    pred[:, :2] = 2
    scores = dice_per_class(pred, truth, 4)
    assert scores.shape == (3,)
    assert scores[0] == pytest.approx(2 * 32 / (32 + 64))
    assert scores[1] == 0.0 and scores[2] == 1.0  # class 3 empty in both
