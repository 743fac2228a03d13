"""The SSL4MIS UNet: output shapes at every decoder level, parameter count."""

import pytest
import torch

from mona.models.unet import UNet, UNetOutput, frozen_batchnorm_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(1, 4).eval()


@pytest.mark.parametrize("h, w", [(64, 64), (64, 96)])
def test_output_shapes(model, h, w):
    with torch.no_grad():
        out = model(torch.rand(1, 1, h, w))
    assert isinstance(out, UNetOutput)
    assert out.logits.shape == (1, 4, h, w)
    assert out.bottleneck.shape == (1, 256, h // 16, w // 16)
    expected = [(256, 16), (128, 8), (64, 4), (32, 2), (16, 1)]
    assert len(out.decoder) == 5
    for feature, (channels, stride) in zip(out.decoder, expected):
        assert feature.shape == (1, channels, h // stride, w // stride)
    assert out.decoder[0] is out.bottleneck


def test_classes_and_input_channels():
    out = UNet(3, 2).eval()(torch.rand(1, 3, 16, 16))
    assert out.logits.shape == (1, 2, 16, 16)


def test_parameter_count(model):
    count = sum(p.numel() for p in model.parameters())
    assert 1_700_000 <= count <= 2_000_000


def test_gradients_reach_the_first_layer():
    model = UNet(1, 4)
    model(torch.rand(2, 1, 16, 16)).logits.sum().backward()
    first = model.encoder[0][0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_eval_is_deterministic_train_is_not(model):
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)
        model.train()
        try:
            a, b = model(x).logits, model(x).logits
        finally:
            model.eval()
    assert not torch.equal(a, b)  # encoder dropout is active in training


def test_frozen_batchnorm_statistics_keeps_running_stats_and_restores_momentum():
    model = UNet(1, 4).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(n.running_mean.clone(), n.running_var.clone()) for n in norms]
    with frozen_batchnorm_statistics(model):
        model(torch.rand(2, 1, 32, 32) * 5 + 3)
    for norm, (mean, var) in zip(norms, before):
        assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
        assert norm.momentum == 0.1
    model(torch.rand(2, 1, 32, 32) * 5 + 3)
    assert not torch.equal(norms[0].running_mean, before[0][0])


def test_cpu_dropout_keeps_dropouts_law():
    """Each element kept with probability 1 - p and scaled by 1 / (1 - p); identity in eval mode."""
    from mona.models.unet import CPUDropout

    torch.manual_seed(0)
    dropout = CPUDropout(0.3)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask / 0.7) / dx
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_feature_perturbation_reaches_the_decoder_only():
    """UniMatch's FP pass: the encoder runs once on B images, the decoder once on 2B (clean, then
    channel-dropped copies of every encoder output); the clean half is the plain forward."""
    torch.manual_seed(0)
    model = UNet(1, 4).eval()  # running BatchNorm statistics: the clean half equals model(x) exactly
    x = torch.rand(3, 1, 32, 32)
    encoder_inputs, decoder_inputs = [], []
    model.encoder[0].register_forward_pre_hook(lambda module, args: encoder_inputs.append(args[0].shape[0]))
    for block in model.decoder:
        block.register_forward_pre_hook(lambda module, args: decoder_inputs.append((args[0].shape[0],
                                                                                   args[1].shape[0])))
    clean, perturbed = model.forward_feature_perturbation(x, p=0.5)
    assert encoder_inputs == [3] and decoder_inputs == [(6, 6)] * 4
    assert torch.allclose(clean, model(x).logits, atol=1e-5)
    assert not torch.allclose(perturbed, clean, atol=1e-3)
    clean_0, unperturbed = model.forward_feature_perturbation(x, p=0.0)
    assert torch.allclose(unperturbed, clean_0, atol=1e-5)
