"""The contract every attack keeps, checked as properties over norm x targeted x loss.

Every entry of `attacks.ATTACKS` is checked, with the options it takes (read
from its signature) set small so that each call runs in milliseconds.
"""

import functools
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attacks
from attacks import norms

FAST = {"steps": 3, "queries": 12}
WITH_RESTARTS = {"steps": 2, "queries": 6, "restarts": 2, "early_stop": True}


def takes(attack, option: str) -> bool:
    return option in inspect.signature(attack).parameters


def configured(attack, options: dict):
    """`attack` with those of `options` it takes."""
    return functools.partial(attack, **{k: v for k, v in options.items() if takes(attack, k)})


ATTACKS = {name: configured(attack, FAST) for name, attack in attacks.ATTACKS.items()}
ATTACKS.update(
    {
        f"{name}-restarts": configured(attack, WITH_RESTARTS)
        for name, attack in attacks.ATTACKS.items()
        if takes(attack, "restarts")
    }
)
CLASSES = 4


def test_every_registered_attack_is_checked():
    assert set(attacks.ATTACKS) <= set(ATTACKS)
    assert {"fgsm", "pgd", "apgd", "square"} <= set(attacks.ATTACKS)


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
@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 5),
    eps=st.floats(0.0, 2.0),
    per_sample=st.booleans(),
    name=st.sampled_from(sorted(ATTACKS)),
    no_grad=st.booleans(),
)
def test_attack_contract(
    make_bn_model, untouched, norm, targeted, loss, seed, n, eps, per_sample, name, no_grad
):
    model = make_bn_model(CLASSES, seed=seed % 3)
    x, y, target = case(seed, n, targeted)
    budget = (
        torch.rand(n, generator=torch.Generator().manual_seed(seed)) * eps if per_sample else eps
    )
    options = {"norm": norm, "target": target, "loss": loss}
    if takes(ATTACKS[name], "generator"):
        options["generator"] = torch.Generator().manual_seed(seed)
    rng_state = torch.get_rng_state()

    with untouched(model), torch.set_grad_enabled(not no_grad):
        x_adv = ATTACKS[name](model, x, y, budget, **options)

    assert torch.equal(torch.get_rng_state(), rng_state)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and x_adv is not x
    limit = budget if per_sample else torch.full((n,), eps)
    assert (norms.norm_of(x_adv - x, norm) <= limit + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if takes(ATTACKS[name], "generator"):
        options["generator"] = torch.Generator().manual_seed(seed)
    assert torch.equal(x_adv, ATTACKS[name](model, x, y, budget, **options))


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_eps_zero_returns_an_equal_new_tensor(bn_model, images, untouched, name, norm):
    x, y = images
    for eps in (0, 0.0, torch.tensor(0.0), torch.zeros(len(x))):
        with untouched(bn_model):
            x_adv = ATTACKS[name](bn_model, x, y, eps, norm=norm)
        assert torch.equal(x_adv, x) and x_adv is not x


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("norm", attacks.NORMS)
@pytest.mark.slow  # hypothesis: many examples per case
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(0.01, 3.0))
def test_flat_inputs_without_clipping(make_flat_model, name, norm, seed, eps):
    model = make_flat_model()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 6, generator=generator, dtype=torch.float64) * 3
    y = torch.randint(0, 3, (7,), generator=generator)
    x_adv = ATTACKS[name](model, x, y, eps, norm=norm, clip=None)
    assert x_adv.dtype == torch.float64
    assert (norms.norm_of(x_adv - x, norm) <= eps + 1e-6).all()
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("norm", attacks.NORMS)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize(
    "attack",
    [
        attacks.fgsm,
        functools.partial(attacks.pgd, random_start=False, early_stop=True),
        functools.partial(attacks.apgd, steps=10, random_start=False, early_stop=True),
        functools.partial(attacks.apgd, steps=10, random_start=False, loss="dlr"),
    ],
    ids=["fgsm", "pgd", "apgd", "apgd-dlr"],
)
def test_batch_of_attacks_equals_attacks_of_its_halves(make_flat_model, attack, targeted, norm):
    model = make_flat_model()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(10, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=generator)
    target = (y + 1) % 3 if targeted else None
    eps = torch.linspace(0.05, 0.5, 10, dtype=torch.float64)
    whole = attack(model, x, y, eps, norm=norm, target=target)
    halves = [
        attack(
            model,
            x[part],
            y[part],
            eps[part],
            norm=norm,
            target=None if target is None else target[part],
        )
        for part in (slice(0, 3), slice(3, 10))
    ]
    assert torch.allclose(whole, torch.cat(halves), rtol=0, atol=1e-12)
    assert not torch.equal(whole, x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"eps": float("inf")}, "eps"),
        ({"eps": torch.tensor([0.1, -0.1] * 4)}, "eps"),
        ({"eps": torch.ones(3)}, "eps"),
        ({"eps": "0.1"}, "eps"),
        ({"norm": "l1"}, "norm"),
        ({"norm": "Linf"}, "norm"),
        ({"loss": "hinge"}, "loss"),
        ({"y": torch.zeros(7, dtype=torch.int64)}, "y"),
        ({"y": torch.zeros(8, 1, dtype=torch.int64)}, "y"),
        ({"y": torch.zeros(8)}, "y"),
        ({"y": torch.full((8,), 4)}, "y"),
        ({"y": torch.full((8,), -1)}, "y"),
        ({"target": torch.full((8,), 9)}, "target"),
        ({"target": torch.zeros(8, 2, dtype=torch.int64)}, "target"),
        ({"y": torch.arange(8) % 4, "target": torch.arange(8) % 4}, "target"),
        ({"x": torch.full((8, 1, 4, 4), 1.5)}, "x"),
        ({"x": torch.full((8, 1, 4, 4), -0.01)}, "x"),
        ({"x": torch.full((8, 1, 4, 4), float("nan"))}, "x"),
        ({"x": torch.zeros(8, dtype=torch.int64)}, "x"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"clip": (0.0,)}, "clip"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(bn_model, images, name, change, match):
    x, y = images
    arguments = {"x": x, "y": y, "eps": 0.1, **change}
    positional = [arguments.pop(key) for key in ("x", "y", "eps")]
    with pytest.raises(ValueError, match=match):
        ATTACKS[name](bn_model, *positional, **arguments)


def test_inputs_a_rounding_error_outside_clip_are_accepted(bn_model, images):
    x, y = images
    x = x.clone()
    x[0, 0, 0, 0] = 1 + 5e-7
    x_adv = attacks.pgd(bn_model, x, y, 0.1)
    assert x_adv.max() <= 1
