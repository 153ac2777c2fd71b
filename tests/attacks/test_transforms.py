"""Input diversity and translation invariance (attacks.transforms)."""

import pytest
import torch

from attacks import transforms


def batch(n: int = 3, channels: int = 2, height: int = 8, width: int = 8) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(0))


def test_diverse_at_probability_zero_is_the_identity_and_draws_nothing():
    x = batch()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert transforms.diverse(x, 0.0, 0.9, generator) is x
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (2, 3, 10, 6), (1, 1, 5, 12)])
@pytest.mark.parametrize("scale", [0.5, 0.9])
def test_diverse_keeps_the_shape_and_shrinks_into_a_zero_frame(shape, scale):
    x = batch(*shape) + 0.1  # no zero pixel, so the padding shows
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        out = transforms.diverse(x, 1.0, scale, generator)
        assert out.shape == x.shape and out.dtype == x.dtype
        zero_rows = (out == 0).all(dim=3).all(dim=1).all(dim=0)
        zero_columns = (out == 0).all(dim=2).all(dim=1).all(dim=0)
        assert 1 <= zero_columns.sum() <= shape[3] - int(scale * shape[3])
        assert zero_rows.sum() >= 1  # the height shrinks in the same ratio
        assert (out != 0).any(dim=(0, 1)).sum() > 0


def test_diverse_draws_offsets_and_sizes_from_the_generator_only():
    x = batch(height=10, width=10)
    rng_state = torch.get_rng_state()
    first = [transforms.diverse(x, 0.5, 0.5, torch.Generator().manual_seed(s)) for s in range(12)]
    again = [transforms.diverse(x, 0.5, 0.5, torch.Generator().manual_seed(s)) for s in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(torch.get_rng_state(), rng_state)
    # Some draws leave the batch alone (probability 0.5), the others differ among themselves.
    untouched = sum(out is x for out in first)
    assert 0 < untouched < 12
    distinct = {tuple(out.flatten().tolist()) for out in first if out is not x}
    assert len(distinct) > 1


def test_diverse_is_differentiable():
    x = batch().requires_grad_(True)
    out = transforms.diverse(x, 1.0, 0.6, torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0
    # Bilinear shrinking keeps the weights summing to one per output pixel.
    inside = (out != 0).sum().item()
    assert grad.sum().item() == pytest.approx(inside, rel=1e-5)


def test_diverse_works_in_half_precision():
    x = batch().to(torch.bfloat16)
    out = transforms.diverse(x, 1.0, 0.5, torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_a_one_pixel_image_is_left_alone():
    x = torch.rand(2, 1, 1, 5)
    assert transforms.diverse(x, 1.0, 0.5, torch.Generator()) is x


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: transforms.diverse(torch.rand(4, 16), 0.5, 0.9, torch.Generator()), "diversity"),
        (lambda: transforms.diverse(batch(), 1.1, 0.9, torch.Generator()), "diversity"),
        (lambda: transforms.diverse(batch(), 0.5, 1.0, torch.Generator()), "diversity_scale"),
        (lambda: transforms.smooth_gradient(torch.rand(4, 16), torch.ones(3, 3)), "translation"),
        (lambda: transforms.smooth_gradient(batch(), torch.ones(2, 2)), "kernel"),
        (lambda: transforms.smooth_gradient(batch(), torch.ones(3, 5)), "kernel"),
        (lambda: transforms.gaussian_kernel(4), "size"),
        (lambda: transforms.gaussian_kernel(0), "size"),
        (lambda: transforms.gaussian_kernel(3, sigma=0.0), "sigma"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("size", [1, 3, 7, 15])
def test_gaussian_kernel_sums_to_one_and_is_symmetric_with_its_peak_in_the_middle(size):
    kernel = transforms.gaussian_kernel(size, dtype=torch.float64)
    assert kernel.shape == (size, size)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(kernel, kernel.T) and torch.equal(kernel, kernel.flip(0))
    assert kernel[size // 2, size // 2] == kernel.max()


def test_gaussian_kernel_default_spans_three_sigma():
    # As TI-FGSM: a linspace over [-3, 3] with `size` points, so the edge is exp(-4.5) of the peak.
    kernel = transforms.gaussian_kernel(7, dtype=torch.float64)
    assert kernel[3, 0] / kernel[3, 3] == pytest.approx(torch.exp(torch.tensor(-4.5)).item())


def test_smoothing_a_single_spike_gives_the_kernel_in_every_channel():
    grad = torch.zeros(2, 3, 9, 9)
    grad[:, :, 4, 4] = 1.0
    kernel = transforms.gaussian_kernel(5)
    smooth = transforms.smooth_gradient(grad, kernel)
    assert smooth.shape == grad.shape
    for n in range(2):
        for c in range(3):
            assert torch.allclose(smooth[n, c, 2:7, 2:7], kernel)
    assert torch.allclose(smooth.sum(dim=(2, 3)), torch.ones(2, 3))


def test_smoothing_keeps_channels_apart_and_the_size_one_kernel_is_the_identity():
    grad = batch(2, 3, 6, 6)
    assert torch.equal(transforms.smooth_gradient(grad, transforms.gaussian_kernel(1)), grad)
    grad[:, 1] = 0
    assert (transforms.smooth_gradient(grad, transforms.gaussian_kernel(3))[:, 1] == 0).all()
