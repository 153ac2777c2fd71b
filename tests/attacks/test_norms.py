import pytest
import torch

from attacks import norms
from attacks.noise import Noise


def test_norm_of_is_per_sample_over_all_but_the_first_dimension():
    delta = torch.tensor([[[3.0, 0.0], [0.0, -4.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    assert torch.equal(norms.norm_of(delta, "l2"), torch.tensor([5.0, 0.0]))
    assert torch.equal(norms.norm_of(delta, "linf"), torch.tensor([4.0, 0.0]))


def ball_step(x, grad, size, eps, norm, clip=None):
    return norms.ball(x, eps, norm, clip).step(x, grad, size)


def test_a_step_moves_by_the_sign_for_linf_and_a_unit_gradient_for_l2():
    x, grad, big = torch.zeros(2, 2), torch.tensor([[3.0, -4.0], [0.0, 0.5]]), torch.ones(2) * 9
    linf = ball_step(x, grad, torch.ones(2), big, "linf")
    assert torch.equal(linf, torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    l2 = ball_step(x, grad, torch.ones(2), big, "l2")
    assert torch.allclose(l2, torch.tensor([[0.6, -0.8], [0.0, 1.0]]))


@pytest.mark.parametrize("norm", norms.NORMS)
def test_a_zero_gradient_does_not_move_the_point_nor_make_nans(norm):
    x = torch.full((2, 3), 0.5)
    assert torch.equal(ball_step(x, torch.zeros(2, 3), torch.ones(2), torch.ones(2), norm), x)


def test_project_l2_scales_long_perturbations_onto_the_sphere_and_keeps_short_ones():
    x = torch.zeros(3, 2)
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    eps = torch.tensor([1.0, 1.0, 0.0])
    projected = norms.ball(x, eps, "l2", None).project(delta)
    assert torch.allclose(projected, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_project_linf_clamps_each_coordinate_to_its_samples_eps():
    x = torch.zeros(2, 3)
    delta = torch.tensor([[0.5, -0.5, 0.05], [0.5, -0.5, 0.05]])
    projected = norms.ball(x, torch.tensor([0.1, 0.2]), "linf", None).project(delta)
    assert torch.equal(projected, torch.tensor([[0.1, -0.1, 0.05], [0.2, -0.2, 0.05]]))


def test_step_projects_then_clips():
    x = torch.tensor([[0.95, 0.5]])
    step = ball_step(
        x, torch.tensor([[1.0, -1.0]]), torch.tensor([0.3]), torch.tensor([0.1]), "linf", (0.0, 1.0)
    )
    assert torch.allclose(step, torch.tensor([[1.0, 0.4]]))


def noise(seed: int, n: int) -> Noise:
    return Noise.of(torch.zeros(n, 1), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm", norms.NORMS)
def test_random_start_stays_in_the_ball_and_the_box(norm):
    x = torch.rand(64, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.linspace(0, 0.5, 64)
    start = norms.random_start(x, eps, norm, (0.0, 1.0), noise(1, len(x)))
    assert (norms.norm_of(start - x, norm) <= eps + 1e-6).all()
    assert start.min() >= 0 and start.max() <= 1


def test_random_start_l2_has_a_uniform_radius_and_direction():
    # Radius uniform in [0, eps] (as torchattacks), so half the starts lie within eps / 2,
    # whatever the dimension; a volume-uniform draw in 16 dimensions would put 0.002% there.
    x = torch.zeros(20000, 16)
    start = norms.random_start(x, torch.ones(20000), "l2", None, noise(0, len(x)))
    radius = start.norm(dim=1)
    assert radius.max() <= 1 + 1e-6
    assert abs((radius <= 0.5).float().mean().item() - 0.5) < 0.015
    # Isotropic directions: the mean unit vector is near zero in every coordinate.
    assert (start / radius[:, None]).mean(dim=0).abs().max() < 0.02


def test_random_start_linf_is_uniform_per_coordinate():
    x = torch.zeros(20000, 3)
    start = norms.random_start(x, torch.full((20000,), 2.0), "linf", None, noise(0, len(x)))
    assert start.abs().max() <= 2.0
    # Uniform on [-2, 2]: mean 0, variance 4/3.
    assert start.mean().abs() < 0.03
    assert abs(start.var().item() - 4 / 3) < 0.03


def test_random_start_depends_only_on_each_samples_seed():
    x = torch.zeros(4, 5)
    eps = torch.ones(4)
    seeds = torch.tensor([5, 6, 7, 8])
    whole = norms.random_start(x, eps, "l2", None, Noise(seeds), "start", 0)
    part = norms.random_start(x[[3, 2]], eps[[3, 2]], "l2", None, Noise(seeds[[3, 2]]), "start", 0)
    assert torch.equal(whole[[3, 2]], part)
    first = norms.random_start(x, eps, "l2", None, noise(3, len(x)))
    torch.manual_seed(123)
    second = norms.random_start(x, eps, "l2", None, noise(3, len(x)))
    assert torch.equal(first, second)
