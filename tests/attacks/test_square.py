import pytest
import torch
from torch import nn

import attacks
from attacks import norms
from attacks.square import _pattern, _window, fraction


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.slow  # 300 queries on 400 samples, twice
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_square_fools_a_linear_model_wherever_the_budget_exceeds_the_margin(linear_problem, norm):
    # The budget needed to flip a sample is its margin over the dual norm of w_1 - w_0;
    # random search gets there for every sample that needs 5% less than eps.
    p = linear_problem
    needed = p.margin(p.x) / p.dual_norm[norm]
    for eps in (0.2, 0.5):
        x_adv = attacks.square(p.model, p.x, p.y, eps, norm=norm, queries=300, clip=None)
        assert (norms.norm_of(x_adv - p.x, norm) <= eps + 1e-9).all()
        fooled = p.margin(x_adv) <= 0
        assert fooled[needed < 0.95 * eps].all() and not fooled[needed > eps].any()


def image_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small random CNN on 3-channel 6 x 6 images, and 48 images it classifies as `y`."""
    generator = gen(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    x = torch.rand(48, 3, 6, 6, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.3)])
def test_square_fools_an_image_model_without_gradients(norm, eps):
    model, x, y = image_model()
    x_adv = attacks.square(model, x, y, eps, norm=norm, queries=200)
    pgd = attacks.pgd(model, x, y, eps, norm=norm, steps=20)
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).sum().item()
        pgd_fooled = (model(pgd).argmax(1) != y).sum().item()
    # Without gradients and with 200 queries, Square trails PGD, more so in L2 (paper, Table 2).
    assert fooled >= pgd_fooled / 3 and fooled >= 8


@pytest.mark.slow  # runs the reference implementation too
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_square_is_at_least_as_strong_as_the_reference_implementation(norm, eps):
    from pyautoattack.square import SquareAttack

    model, x, y = image_model()
    x, y = x.repeat(4, 1, 1, 1), y.repeat(4)  # different random draws per copy
    ours = attacks.square(model, x, y, eps, norm=norm, queries=500)
    reference = SquareAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], n_queries=500, eps=eps)
    with torch.random.fork_rng():  # the reference seeds the global generator
        theirs = reference.perturb(x, y)
    with torch.no_grad():
        fooled = (model(ours).argmax(1) != y).sum().item()
        theirs_fooled = (model(theirs).argmax(1) != y).sum().item()
    assert theirs_fooled > 20 and fooled >= theirs_fooled - 4


def test_targeted_square_reaches_the_target(make_flat_model):
    model = make_flat_model()
    x = torch.rand(64, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen(2))
    target = (y + 1) % 3
    x_adv = attacks.square(model, x, y, 1.0, target=target, queries=200, clip=None)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == target).double().mean() > 0.5


def test_each_query_is_one_forward_pass_and_fooled_samples_stop(make_flat_model, forward_counter):
    model = forward_counter(make_flat_model())
    x = torch.rand(64, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen(2))
    attacks.square(model, x, y, 0.3, queries=50, clip=None, early_stop=False)
    assert model.calls == 50 and model.samples == 50 * 64
    model.calls = model.samples = 0
    attacks.square(model, x, y, 0.3, queries=50, clip=None)
    assert model.calls <= 50 and model.samples < 50 * 64


def test_early_stop_changes_no_outcome(make_flat_model):
    # A sample's search does not depend on the others: the same draws, the same successes.
    model = make_flat_model()
    x = torch.rand(64, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen(2))
    early = attacks.square(model, x, y, 0.3, queries=50, clip=None)
    late = attacks.square(model, x, y, 0.3, queries=50, clip=None, early_stop=False)
    with torch.no_grad():
        assert torch.equal(model(early).argmax(1) != y, model(late).argmax(1) != y)
    unfooled = model(early).argmax(1) == y
    assert torch.equal(early[unfooled], late[unfooled])


def test_the_square_shrinks_on_the_papers_schedule():
    # Out of 10,000 queries: p_init up to 10, halved after 10, 50, 200, ..., 8000.
    assert fraction(0.8, 10, 10_000) == 0.8
    assert fraction(0.8, 11, 10_000) == 0.4
    assert fraction(0.8, 51, 10_000) == 0.2
    assert fraction(0.8, 9_999, 10_000) == 0.8 / 512
    assert fraction(0.8, 5, 1_000) == 0.4  # rescaled: 5 of 1,000 is 50 of 10,000


def test_windows_are_squares_of_the_given_area_or_strips_on_thin_inputs():
    assert _window(0.25, torch.Size([1, 3, 8, 8]), "linf") == (4, 4)
    assert _window(0.01, torch.Size([1, 3, 8, 8]), "linf") == (1, 1)
    assert _window(0.01, torch.Size([1, 3, 8, 8]), "l2") == (3, 3)  # odd and >= 3
    assert _window(0.3, torch.Size([1, 3, 8, 8]), "l2") == (5, 5)
    assert _window(1.0, torch.Size([1, 3, 8, 8]), "l2") == (8, 8)
    assert _window(0.5, torch.Size([1, 1, 1, 100]), "linf") == (1, 50)


def test_l2_pattern_has_two_opposite_peaks_and_unit_norm():
    pattern = _pattern(5, 5, 0, torch.zeros((), dtype=torch.float64))
    assert pattern.norm().item() == pytest.approx(1.0)
    assert (pattern[:2] > 0).all() and (pattern[2:] < 0).all()
    assert pattern[:2].argmax() == 7 and pattern[2:].argmin() == 7  # each half peaks at (1, 2)
    assert torch.equal(_pattern(5, 5, 1, pattern), pattern.T)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"queries": 0}, "queries"),
        ({"restarts": 0}, "restarts"),
        ({"p_init": 0.0}, "p_init"),
        ({"p_init": 1.5}, "p_init"),
    ],
)
def test_square_rejects_bad_options(bn_model, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.square(bn_model, *images, 0.1, **kwargs)
