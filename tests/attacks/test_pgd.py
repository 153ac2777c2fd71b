import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attacks
from attacks import losses, norms
from attacks.noise import Noise


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("loss", attacks.LOSSES)
def test_linf_pgd_on_a_linear_model_reaches_the_optimal_corner(linear_problem, loss):
    # From any random start, 10 steps of 0.25 * eps reach the corner eps * sign(w_other - w_y).
    p = linear_problem
    for eps in (0.05, 0.2, 0.5):
        x_adv = attacks.pgd(p.model, p.x, p.y, eps, loss=loss, clip=None, generator=gen())
        drop = p.margin(p.x) - p.margin(x_adv)
        assert torch.allclose(drop, eps * p.dual_norm["linf"].expand_as(drop), atol=1e-9)


@pytest.mark.parametrize("loss", attacks.LOSSES)
def test_l2_pgd_without_random_start_walks_straight_to_the_optimum(linear_problem, loss):
    p = linear_problem
    for eps in (0.05, 0.2, 0.5):
        x_adv = attacks.pgd(
            p.model, p.x, p.y, eps, norm="l2", loss=loss, random_start=False, clip=None
        )
        drop = p.margin(p.x) - p.margin(x_adv)
        assert torch.allclose(drop, eps * p.dual_norm["l2"].expand_as(drop), atol=1e-9)


def test_l2_pgd_from_a_random_start_converges_to_the_optimum(linear_problem):
    # Each projection shrinks the part of the start orthogonal to the optimum by ~0.8.
    p = linear_problem
    x_adv = attacks.pgd(
        p.model, p.x, p.y, 0.3, norm="l2", steps=50, step_size=0.075, clip=None, generator=gen()
    )
    drop = p.margin(p.x) - p.margin(x_adv)
    assert torch.allclose(drop, 0.3 * p.dual_norm["l2"].expand_as(drop), rtol=1e-6)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_pgd_reaches_the_closed_form_robust_accuracy(linear_problem, norm):
    p = linear_problem
    for eps in (0.1, 0.3, 1.0):
        x_adv = attacks.pgd(
            p.model,
            p.x,
            p.y,
            eps,
            norm=norm,
            steps=50,
            step_size=eps / 4,
            clip=None,
            generator=gen(),
        )
        accuracy = (p.margin(x_adv) > 0).double().mean().item()
        assert accuracy == p.robust_accuracy(eps, norm)


def test_default_step_size_is_two_and_a_half_eps_over_steps(bn_model, images):
    x, y = images
    default = attacks.pgd(bn_model, x, y, 0.1, steps=5, random_start=False)
    explicit = attacks.pgd(bn_model, x, y, 0.1, steps=5, step_size=0.05, random_start=False)
    assert torch.equal(default, explicit)
    smaller = attacks.pgd(bn_model, x, y, 0.1, steps=5, step_size=0.01, random_start=False)
    assert not torch.equal(default, smaller)


def test_explicit_step_size_sets_the_length_of_each_step(make_flat_model):
    model = make_flat_model(features=3)
    x = torch.full((4, 3), 0.5, dtype=torch.float64)
    x_adv = attacks.pgd(
        model, x, torch.tensor([0, 1, 0, 1]), 1.0, steps=1, step_size=0.01, random_start=False
    )
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, 0.01))


def test_pgd_costs_one_forward_per_step_and_one_more_per_restart_to_compare(
    bn_model, images, forward_counter
):
    model = forward_counter(bn_model)
    attacks.pgd(model, *images, 0.1, steps=7)
    assert model.calls == 7
    model.calls = 0
    attacks.pgd(model, *images, 0.1, steps=7, restarts=3, generator=gen())
    assert model.calls <= 3 * (7 + 1)


def test_parameters_get_no_gradients_and_keep_requires_grad(bn_model, images):
    attacks.pgd(bn_model, *images, 0.1)
    assert all(p.grad is None and p.requires_grad for p in bn_model.parameters())


def test_early_stop_keeps_every_success_and_attacks_fewer_samples(make_flat_model, forward_counter):
    # Samples are independent, so one that never succeeds follows the same path either way;
    # one that does keeps its first success instead of possibly losing it later.
    model = forward_counter(make_flat_model())
    x = torch.rand(64, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen(2))
    plain = attacks.pgd(model, x, y, 0.3, clip=None, generator=gen())
    plain_samples, model.samples = model.samples, 0
    early = attacks.pgd(model, x, y, 0.3, clip=None, generator=gen(), early_stop=True)
    with torch.no_grad():
        plain_success = model(plain).argmax(1) != y
        early_success = model(early).argmax(1) != y
    assert (early_success >= plain_success).all()
    assert torch.equal(plain[~early_success], early[~early_success])
    assert 0 < model.samples < plain_samples


def test_early_stop_targeted_stops_at_the_target(make_flat_model):
    model = make_flat_model()
    x = torch.rand(64, 6, generator=gen(1), dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen(2))
    target = (y + 1) % 3
    x_adv = attacks.pgd(model, x, y, 1.0, target=target, clip=None, early_stop=True)
    plain = attacks.pgd(model, x, y, 1.0, target=target, clip=None)
    with torch.no_grad():
        early_success = model(x_adv).argmax(1) == target
        plain_success = model(plain).argmax(1) == target
    assert (early_success >= plain_success).all()
    assert early_success.float().mean() > 0.5


def test_restarts_never_weaker_than_one_run_with_the_same_seed(make_bn_model, images):
    model = make_bn_model()
    x, y = images
    for eps in (0.05, 0.1, 0.2):
        one = attacks.pgd(model, x, y, eps, steps=3, generator=gen(5))
        three = attacks.pgd(model, x, y, eps, steps=3, restarts=3, generator=gen(5))
        with torch.no_grad():
            model.eval()
            one_success = model(one).argmax(1) != y
            three_success = model(three).argmax(1) != y
            model.train()
        assert (three_success >= one_success).all()


def test_restarts_keep_the_run_with_the_highest_objective_when_nothing_succeeds(linear_problem):
    # A tiny eps fools no sample with a clear margin; clean errors are fooled by the first
    # run and kept. Restart r > 0 draws from the seeds forked from each sample's own: three
    # one-run calls with those seeds draw the same starts as one call with three restarts.
    p = linear_problem
    options = {"steps": 1, "step_size": 1e-4, "clip": None}
    seeds = torch.arange(len(p.x)) * 7919
    noise = Noise(seeds)
    family = [seeds, noise.fork("restart", 1).seeds, noise.fork("restart", 2).seeds]
    runs = torch.stack([attacks.pgd(p.model, p.x, p.y, 1e-3, seeds=s, **options) for s in family])
    best = attacks.pgd(p.model, p.x, p.y, 1e-3, restarts=3, seeds=seeds, **options)
    with torch.no_grad():
        values = torch.stack([losses.objective(p.model(run), p.y, None, "ce") for run in runs])
    clear = p.margin(p.x) > 0.1
    wrong = p.margin(p.x) < -0.1
    assert torch.equal(best[wrong], runs[0][wrong])
    expected = runs[values.argmax(dim=0), torch.arange(len(p.x))]
    assert torch.equal(best[clear], expected[clear])
    assert len(set(values.argmax(dim=0)[clear].tolist())) == 3  # every run wins somewhere


def test_generator_none_is_reproducible_and_leaves_the_global_rng_alone(bn_model, images):
    state = torch.get_rng_state()
    first = attacks.pgd(bn_model, *images, 0.1)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert torch.equal(first, attacks.pgd(bn_model, *images, 0.1))


def test_different_seeds_give_different_random_starts(bn_model, images):
    one = attacks.pgd(bn_model, *images, 0.1, steps=1, generator=gen(0))
    other = attacks.pgd(bn_model, *images, 0.1, steps=1, generator=gen(1))
    assert not torch.equal(one, other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
    ],
)
def test_pgd_rejects_bad_options(bn_model, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.pgd(bn_model, *images, 0.1, **kwargs)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 1.5), norm=st.sampled_from(attacks.NORMS))
def test_a_warm_start_anywhere_stays_in_the_ball_and_a_fooling_start_is_kept(seed, eps, norm):
    # Any start is projected onto the ball and the box; with early_stop a start that
    # already fools comes back as its projection (no step is taken from it).
    generator = gen(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double()
    x = torch.rand(6, 1, 3, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=generator)
    start = x + 3 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    x_adv = attacks.pgd(model, x, y, eps, norm=norm, steps=3, start=start, early_stop=True)
    assert (norms.norm_of(x_adv - x, norm) <= eps + 1e-9).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ball = norms.ball(x, torch.full((6,), float(eps), dtype=x.dtype), norm, (0.0, 1.0))
    projected = ball.project(start)
    with torch.no_grad():
        fooled = model(projected).argmax(1) != y
    assert torch.allclose(x_adv[fooled], projected[fooled], atol=1e-12)
    again = attacks.pgd(model, x, y, eps, norm=norm, steps=3, start=start, early_stop=True)
    assert torch.equal(again, x_adv)  # a warm start draws nothing at random


@pytest.mark.parametrize(
    "start", [torch.zeros(2, 4), torch.zeros(3, 5), torch.full((3, 4), float("nan")), 1.0]
)
def test_a_malformed_start_is_refused_naming_it(start):
    model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="start"):
        attacks.pgd(model, torch.rand(3, 4), torch.zeros(3, dtype=torch.long), 0.1, start=start)
