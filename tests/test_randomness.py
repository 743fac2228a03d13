import pytest
import torch

from mona.randomness import device_generator


def test_same_device_type_keeps_the_generator_and_its_stream():
    generator = torch.Generator().manual_seed(3)
    assert device_generator(generator, "cpu") is generator
    assert device_generator(generator, torch.device("cpu")) is generator


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_generator_is_seeded_by_the_step_generator():
    first = device_generator(torch.Generator().manual_seed(3), "cuda")
    second = device_generator(torch.Generator().manual_seed(3), "cuda")
    assert first.device.type == "cuda"
    assert torch.equal(torch.rand(5, generator=first, device="cuda"), torch.rand(5, generator=second, device="cuda"))
    other = device_generator(torch.Generator().manual_seed(4), "cuda")
    assert not torch.equal(torch.rand(5, generator=other, device="cuda"),
                           torch.rand(5, generator=device_generator(torch.Generator().manual_seed(3), "cuda"),
                                      device="cuda"))
