"""Intervals and masking flags, each on a model built to trigger it."""

import warnings

import pytest
import torch
from torch import nn

from advkit.evaluate import robustness_curve
from advkit.runs import load_run
from advkit.train import TrainConfig, train
from advkit.trust import compare_flags, curve_flags, wilson


def test_wilson_matches_the_closed_form_values():
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(360, 360)[1] == pytest.approx(1.0)
    # With 360 samples an interval is about +-5 points, as the report says.
    low, high = wilson(180, 360)
    assert 0.09 < high - low < 0.11


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


class Rounding(nn.Module):
    """Quantizes its input to 4 levels first: exactly zero gradients everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 3) / 3)


class Noisy(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train(TrainConfig(model="mlp", epochs=2), out, dataset=small_digits)
    return load_run(out)[0]


def codes(curve):
    return {f["code"] for f in curve.flags}


@pytest.mark.parametrize(
    "wrap, code",
    [
        (Rounding, "zero-gradients"),
        (lambda m: nn.Sequential(m, nn.Softmax(dim=1)), "probabilities"),
        (Noisy, "stochastic"),
    ],
)
def test_each_model_flag_fires_on_its_trigger_model(trained, small_digits, wrap, code):
    x, y = small_digits.x_test[:32], small_digits.y_test[:32]
    with pytest.warns(UserWarning):
        curve = robustness_curve(wrap(trained), x, y, [0, 0.1], steps=3)
    assert code in codes(curve)


def test_a_masked_model_is_flagged_for_a_curve_that_does_not_fall(trained, small_digits):
    x, y = small_digits.x_test[:32], small_digits.y_test[:32]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = robustness_curve(Rounding(trained), x, y, [0, 0.1, 0.3, 0.4, 0.6], steps=5)
    assert {"no-fall", "zero-gradients"} <= codes(curve)


def test_a_trained_digits_model_raises_no_flag(trained, small_digits):
    x, y = small_digits.x_test[:64], small_digits.y_test[:64]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = robustness_curve(trained, x, y, [0, 0.1, 0.2, 0.3, 0.6], steps=10)
    assert curve.flags == []
    assert all(
        low <= a <= high for a, (low, high) in zip(curve.accuracy, curve.intervals, strict=True)
    )


def test_curve_flags_from_shapes():
    assert curve_flags([0, 0.1, 0.2, 0.3], [1.0, 0.5, 0.2, 0.0], "linf", (0, 1)) == []
    flat = curve_flags([0, 0.1, 0.2, 0.3], [1.0, 0.4, 0.4, 0.4], "l2", (0, 1))
    assert [f["code"] for f in flat] == ["flat-tail"]


def test_a_one_step_attack_beating_an_iterative_one_is_flagged():
    curves = {"fgsm": ([0, 0.1], [0.9, 0.3]), "pgd": ([0, 0.1], [0.9, 0.5])}
    flags = compare_flags(curves, {"fgsm": False, "pgd": True})
    assert [f["code"] for f in flags] == ["one-step-stronger"]
    curves["pgd"] = ([0, 0.1], [0.9, 0.2])
    assert compare_flags(curves, {"fgsm": False, "pgd": True}) == []
