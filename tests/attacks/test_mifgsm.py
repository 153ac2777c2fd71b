"""MI-FGSM: the attack contract, and its maths checked against loops written out by hand."""

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import attacks
from attacks import norms

CLASSES = 4
VARIANTS = {
    "mifgsm": functools.partial(attacks.mifgsm, steps=3),
    "ifgsm": functools.partial(attacks.mifgsm, steps=3, decay=0.0),
    "dim-ti": functools.partial(attacks.mifgsm, steps=3, diversity=0.7, translation=3),
    "dim-always": functools.partial(attacks.mifgsm, steps=2, diversity=1.0, diversity_scale=0.5),
}


def case(seed: int, n: int, targeted: bool):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=generator)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    target = (y + torch.randint(1, CLASSES, (n,), generator=generator)) % CLASSES
    return x, y, target if targeted else None


@pytest.mark.parametrize("loss", attacks.LOSSES)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("norm", attacks.NORMS)
@pytest.mark.slow  # hypothesis: many examples per case
@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 5),
    eps=st.floats(0.0, 2.0),
    per_sample=st.booleans(),
    name=st.sampled_from(sorted(VARIANTS)),
    no_grad=st.booleans(),
)
def test_mifgsm_contract(
    make_bn_model, untouched, norm, targeted, loss, seed, n, eps, per_sample, name, no_grad
):
    model = make_bn_model(CLASSES, seed=seed % 3)
    x, y, target = case(seed, n, targeted)
    budget = (
        torch.rand(n, generator=torch.Generator().manual_seed(seed)) * eps if per_sample else eps
    )
    options = {"norm": norm, "target": target, "loss": loss}
    rng_state = torch.get_rng_state()

    with untouched(model), torch.set_grad_enabled(not no_grad):
        x_adv = VARIANTS[name](
            model, x, y, budget, generator=torch.Generator().manual_seed(seed), **options
        )

    assert torch.equal(torch.get_rng_state(), rng_state)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv is not x
    limit = budget if per_sample else torch.full((n,), eps)
    assert (norms.norm_of(x_adv - x, norm) <= limit + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    again = VARIANTS[name](
        model, x, y, budget, generator=torch.Generator().manual_seed(seed), **options
    )
    assert torch.equal(x_adv, again)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_eps_zero_returns_an_equal_new_tensor(bn_model, images, untouched, name, norm):
    x, y = images
    for eps in (0, 0.0, torch.tensor(0.0), torch.zeros(len(x))):
        with untouched(bn_model):
            x_adv = VARIANTS[name](bn_model, x, y, eps, norm=norm)
        assert torch.equal(x_adv, x) and x_adv is not x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_the_budget_holds_in_the_inputs_dtype(make_bn_model, dtype):
    model = make_bn_model(CLASSES).to(dtype)
    x, y, _ = case(0, 6, False)
    x = x.to(dtype)
    for norm in attacks.NORMS:
        x_adv = attacks.mifgsm(model, x, y, 0.1, norm=norm, diversity=0.5, translation=3)
        assert x_adv.dtype == dtype
        assert (norms.norm_of(x_adv.double() - x.double(), norm) <= 0.1 + 1e-6).all()
        assert not torch.equal(x_adv, x)


def test_the_attack_is_the_same_inside_and_outside_no_grad(bn_model, images):
    x, y = images
    outside = attacks.mifgsm(bn_model, x, y, 0.2, diversity=0.5)
    with torch.no_grad():
        inside = attacks.mifgsm(bn_model, x, y, 0.2, diversity=0.5)
    assert torch.equal(inside, outside)


def test_randomness_comes_from_the_generator_only(bn_model, images):
    x, y = images
    default = attacks.mifgsm(bn_model, x, y, 0.3, diversity=0.5)
    seeded = attacks.mifgsm(
        bn_model, x, y, 0.3, diversity=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(default, seeded)  # None means a generator seeded with 0
    results = {
        tuple(
            attacks.mifgsm(
                bn_model, x, y, 0.3, diversity=0.5, generator=torch.Generator().manual_seed(seed)
            )
            .flatten()
            .tolist()
        )
        for seed in range(6)
    }
    assert len(results) > 1  # the draws do change the result
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    attacks.mifgsm(bn_model, x, y, 0.3, generator=generator)  # no diversity: nothing drawn
    assert torch.equal(generator.get_state(), state)


def test_mifgsm_is_registered():
    assert attacks.ATTACKS["mifgsm"] is attacks.mifgsm
    assert "mifgsm" in attacks.__all__ and "Ensemble" in attacks.__all__


# --- The maths, by hand, on a float64 model with flat inputs ---------------------------


def hand_mifgsm(model, x, y, eps, steps, decay, norm):
    """The paper's loop written out: g <- decay * g + grad / ||grad||_1, then a step."""
    size = eps / steps
    point, momentum = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        point.requires_grad_(True)
        loss = F.cross_entropy(model(point), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
        momentum = decay * momentum + grad / grad.abs().sum(dim=1, keepdim=True)
        with torch.no_grad():
            if norm == "linf":
                point = point + size * momentum.sign()
                point = torch.min(torch.max(point, x - eps), x + eps)
            else:
                point = point + size * momentum / momentum.norm(dim=1, keepdim=True)
                delta = point - x
                point = x + delta * (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1)
    return point.detach()


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_mifgsm_equals_the_loop_written_out(make_flat_model, norm, decay):
    model = make_flat_model()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (9,), generator=generator)
    ours = attacks.mifgsm(model, x, y, 0.4, norm=norm, steps=7, decay=decay, clip=None)
    hand = hand_mifgsm(model, x, y, 0.4, 7, decay, norm)
    assert torch.allclose(ours, hand, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_decay_zero_is_ifgsm_which_is_pgd_from_x(make_flat_model, norm):
    model = make_flat_model()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(12, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=generator)
    ifgsm = attacks.mifgsm(model, x, y, 0.3, norm=norm, steps=5, decay=0.0)
    pgd = attacks.pgd(model, x, y, 0.3, norm=norm, steps=5, step_size=0.06, random_start=False)
    # L-inf: bit for bit; L2 divides by the L1 norm before the L2 one (rounding only).
    assert torch.allclose(ifgsm, pgd, rtol=0, atol=0 if norm == "linf" else 1e-12)
    momentum = attacks.mifgsm(model, x, y, 0.3, norm=norm, steps=5)
    assert not torch.equal(momentum, ifgsm)


def test_mifgsm_on_a_linear_model_reaches_the_closed_form(linear_problem):
    # A linear model's gradient never changes, so every step moves the same way.
    p = linear_problem
    for norm in attacks.NORMS:
        x_adv = attacks.mifgsm(p.model, p.x, p.y, 0.3, norm=norm, clip=None)
        assert (p.margin(x_adv) > 0).double().mean().item() == p.robust_accuracy(0.3, norm)


def test_a_zero_gradient_does_not_move_the_point():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.rand(4, 1, 4, 4)
    for norm in attacks.NORMS:
        x_adv = attacks.mifgsm(model, x, torch.zeros(4, dtype=torch.int64), 0.1, norm=norm)
        assert torch.equal(x_adv, x)


def test_translation_one_is_no_smoothing(bn_model, images):
    x, y = images
    assert torch.equal(
        attacks.mifgsm(bn_model, x, y, 0.2, translation=1), attacks.mifgsm(bn_model, x, y, 0.2)
    )
    assert not torch.equal(
        attacks.mifgsm(bn_model, x, y, 0.2, translation=3), attacks.mifgsm(bn_model, x, y, 0.2)
    )


def test_mifgsm_makes_one_pass_per_step(bn_model, images):
    x, y = images
    with attacks.count_passes(bn_model) as passes:
        attacks.mifgsm(bn_model, x, y, 0.1, steps=4, diversity=0.5)
    assert (passes.forward, passes.backward) == (4 * len(x), 4 * len(x))


# --- Bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"norm": "l1"}, "norm"),
        ({"loss": "hinge"}, "loss"),
        ({"y": torch.zeros(7, dtype=torch.int64)}, "y"),
        ({"y": torch.arange(8) % 4, "target": torch.arange(8) % 4}, "target"),
        ({"x": torch.full((8, 1, 4, 4), 1.5)}, "x"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.0}, "steps"),
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": float("inf")}, "step_size"),
        ({"decay": -1.0}, "decay"),
        ({"decay": float("nan")}, "decay"),
        ({"decay": "1"}, "decay"),
        ({"diversity": 1.5}, "diversity"),
        ({"diversity": -0.1}, "diversity"),
        ({"diversity": float("nan")}, "diversity"),
        ({"diversity_scale": 1.0}, "diversity_scale"),
        ({"diversity_scale": 0.0}, "diversity_scale"),
        ({"translation": 4}, "translation"),
        ({"translation": -1}, "translation"),
        ({"translation": 3.0}, "translation"),
        ({"translation": True}, "translation"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(bn_model, images, change, match):
    x, y = images
    arguments = {"x": x, "y": y, "eps": 0.1, **change}
    positional = [arguments.pop(key) for key in ("x", "y", "eps")]
    with pytest.raises(ValueError, match=match):
        attacks.mifgsm(bn_model, *positional, **arguments)


@pytest.mark.parametrize("option", [{"diversity": 0.5}, {"translation": 3}])
def test_image_options_refuse_flat_inputs(make_flat_model, option):
    model = make_flat_model()
    x = torch.rand(5, 6, dtype=torch.float64)
    y = torch.zeros(5, dtype=torch.int64)
    with pytest.raises(ValueError, match=next(iter(option))):
        attacks.mifgsm(model, x, y, 0.1, **option)
    assert attacks.mifgsm(model, x, y, 0.1).shape == x.shape  # flat inputs work without them
