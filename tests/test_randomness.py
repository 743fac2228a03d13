import pytest
import torch

from mona.randomness import device_generator, host_to_device


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


def test_host_to_device_on_cpu_is_a_plain_move():
    tensor = torch.arange(5.0)
    assert host_to_device(tensor, "cpu") is tensor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_host_to_device_cuda_copy_is_exact_and_ordered():
    draws = [torch.rand(1000, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    moved = [host_to_device(d, "cuda") for d in draws]
    total = sum(m.sum() for m in moved)
    assert all(torch.equal(m.cpu(), d) for m, d in zip(moved, draws))
    assert float(total) == pytest.approx(float(sum(d.sum() for d in draws)), rel=1e-6)
