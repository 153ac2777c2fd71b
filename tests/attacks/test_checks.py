"""The preamble every attack shares: the budget in every dtype, and its argument checks."""

import math

import pytest
import torch
from torch import nn

import attacks
from attacks import norms

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


class Linear(nn.Module):
    """A fixed linear classifier that runs in whatever dtype its input has."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(10, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.to(x.dtype).T


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_the_budget_and_the_box_hold_in_the_inputs_own_dtype(dtype, norm, eps, name):
    # Before: float16 at L-inf 8/255 went to 0.03149 > 0.03137 on every sample.
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    options = {"steps": 5} if name == "pgd" else {}
    x_adv = attacks.ATTACKS[name](Linear(), x, y, eps, norm=norm, **options)
    assert x_adv.dtype == dtype
    distance = norms.norm_of(x_adv.double() - x.double(), norm)
    assert (distance <= eps + 1e-6).all(), distance.max().item()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert distance.max() > 0.9 * eps  # it still used (nearly) the whole budget


class Wrapped(nn.Module):
    """The linear model, returning its logits wrapped in another container."""

    def __init__(self, wrap) -> None:
        super().__init__()
        self.inner, self.wrap = Linear(), wrap

    def forward(self, x: torch.Tensor):
        return self.wrap(self.inner(x))


class ModelOutput:
    """A stand-in for a Hugging Face output object: the logits as an attribute."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        self.hidden_states = None


WRAPS = {
    "tuple": lambda z: (z, z.detach()),
    "list": lambda z: [z],
    "dict": lambda z: {"logits": z, "loss": None},
    "object": ModelOutput,
}


@pytest.mark.parametrize("wrap", list(WRAPS))
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_models_returning_tuples_dicts_or_objects_with_logits_are_attacked_alike(wrap, name):
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    plain, wrapped = Linear(), Wrapped(WRAPS[wrap])
    wrapped.inner.load_state_dict(plain.state_dict())
    options = {"steps": 3} if name == "pgd" else {}
    expected = attacks.ATTACKS[name](plain, x, y, 0.1, **options)
    assert torch.equal(attacks.ATTACKS[name](wrapped, x, y, 0.1, **options), expected)


@pytest.mark.parametrize("output", [None, "logits", (1, 2), {"scores": 1}])
def test_any_other_output_is_a_value_error_saying_what_came_back(output):
    class Odd(nn.Module):
        def forward(self, x):
            return output

    with pytest.raises(ValueError, match=f"got {type(output).__name__}.*Wrap the model"):
        attacks.pgd(Odd(), torch.rand(2, 4), torch.zeros(2, dtype=torch.int64), 0.1)


def test_count_passes_counts_samples_forward_and_backward():
    model = Linear()
    x, y = torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.int64)
    with attacks.count_passes(model) as passes:
        attacks.pgd(model, x, y, 0.1, steps=4)
    assert (passes.forward, passes.backward) == (6 * 4, 6 * 4)
    with attacks.count_passes(model) as passes:
        attacks.fgsm(model, x, y, 0.1)
    assert (passes.forward, passes.backward) == (6, 6)
    model(x)  # outside the block: not counted, and no hook is left behind
    assert not model._forward_hooks


# --- bad data: a ValueError naming the argument, never a number ---------------------------


@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_attacks_refuse_bad_data(tiny_net, bad_data, name):
    x, y, options, message = bad_data
    with pytest.raises(ValueError, match=message):
        attacks.ATTACKS[name](tiny_net, x, y, 0.1, **options)


@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_attacks_refuse_non_finite_inputs_without_clip(tiny_net, tiny_data, name):
    x, y = tiny_data
    x = x.clone()
    x[0, 0, 1, 1] = math.nan
    with pytest.raises(ValueError, match="x"):
        attacks.ATTACKS[name](tiny_net, x, y, 0.1, clip=None)


@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_a_huge_finite_l2_budget_is_refused_not_turned_into_nan(tiny_net, tiny_data, name):
    # Budgets this large overflow float32 norms; the attack says so instead of returning NaN.
    x, y = tiny_data
    x = torch.full_like(x, 0.5)
    with pytest.raises(ValueError, match="eps must be at most"):
        attacks.ATTACKS[name](tiny_net, x, y, 3e38, norm="l2")
    x_adv = attacks.ATTACKS[name](tiny_net, x, y, 1e6, norm="l2")
    assert not x_adv.isnan().any()


@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_an_eps_beyond_float32_is_a_value_error(tiny_net, tiny_data, name):
    with pytest.raises(ValueError, match="eps"):
        attacks.ATTACKS[name](tiny_net, *tiny_data, 1e39)


@pytest.mark.parametrize(
    "target, message",
    [
        (torch.tensor([1, 2, 0, 1, 2]), "target"),  # one label short
        (None, "target must differ from y"),  # None: the true labels as targets
    ],
    ids=["one-short", "the-true-labels"],
)
@pytest.mark.parametrize("name", ["pgd", "fgsm"])
def test_attacks_refuse_bad_targets(tiny_net, tiny_data, name, target, message):
    x, y = tiny_data
    with pytest.raises(ValueError, match=message):
        attacks.ATTACKS[name](tiny_net, x, y, 0.1, target=y if target is None else target)
