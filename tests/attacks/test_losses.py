import math

import pytest
import torch
import torch.nn.functional as F

from attacks import LOSSES, losses

LOGITS = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]])
Y = torch.tensor([0, 2])
TARGET = torch.tensor([2, 1])


def ce(labels):
    return F.cross_entropy(LOGITS, labels, reduction="none")


def test_untargeted_ce_and_lecture_are_the_cross_entropy_with_y():
    for loss in ("ce", "lecture"):
        assert torch.allclose(losses.objective(LOGITS, Y, None, loss), ce(Y))


def test_untargeted_margin_is_best_other_logit_minus_true_logit():
    # Sample 0: max(3, 2) - 1 = 2; sample 1: max(0, -1) - 4 = -4.
    assert torch.equal(losses.objective(LOGITS, Y, None, "margin"), torch.tensor([2.0, -4.0]))


def test_targeted_ce_is_minus_the_cross_entropy_with_the_target():
    assert torch.allclose(losses.objective(LOGITS, Y, TARGET, "ce"), -ce(TARGET))


def test_targeted_lecture_is_ce_with_y_minus_ce_with_target():
    # The log-sum-exp cancels: CE(y) - CE(t) = z_t - z_y.
    expected = torch.tensor([2.0 - 1.0, -1.0 - 4.0])
    assert torch.allclose(losses.objective(LOGITS, Y, TARGET, "lecture"), expected)


def test_targeted_margin_is_target_logit_minus_best_other():
    # Sample 0: 2 - max(1, 3) = -1; sample 1: -1 - max(0, 4) = -5.
    assert torch.equal(losses.objective(LOGITS, Y, TARGET, "margin"), torch.tensor([-1.0, -5.0]))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("targeted", [False, True])
def test_objective_is_per_sample_so_gradients_do_not_mix(loss, targeted):
    logits = LOGITS.clone().requires_grad_(True)
    value = losses.objective(logits, Y, TARGET if targeted else None, loss)
    assert value.shape == (2,)
    (grad,) = torch.autograd.grad(value[0], logits)
    assert torch.equal(grad[1], torch.zeros(3))


@pytest.mark.parametrize("loss", LOSSES)
def test_larger_objective_means_closer_to_the_target(loss):
    toward = torch.tensor([[0.0, 0.0, 5.0]])
    away = torch.tensor([[5.0, 0.0, 0.0]])
    y, target = torch.tensor([0]), torch.tensor([2])
    assert losses.objective(toward, y, target, loss) > losses.objective(away, y, target, loss)
    assert losses.objective(toward, y, None, loss) > losses.objective(away, y, None, loss)


def test_succeeded_untargeted_means_misclassified_and_targeted_means_at_target():
    # Predictions: 1 and 2.
    assert torch.equal(losses.succeeded(LOGITS, Y, None), torch.tensor([True, False]))
    assert torch.equal(losses.succeeded(LOGITS, Y, TARGET), torch.tensor([False, False]))
    assert torch.equal(
        losses.succeeded(LOGITS, Y, torch.tensor([1, 0])), torch.tensor([True, False])
    )


def test_ce_value_matches_the_formula():
    expected = math.log(math.exp(1) + math.exp(3) + math.exp(2)) - 1
    assert losses.objective(LOGITS, Y, None, "ce")[0].item() == pytest.approx(expected, rel=1e-6)


def test_untargeted_dlr_by_hand():
    # Sample 0: sorted 3, 2, 1; (max_other - z_y) / (z1 - z3) = (3 - 1) / (3 - 1) = 1.
    # Sample 1: sorted 4, 0, -1; (0 - 4) / (4 - (-1)) = -0.8.
    value = losses.objective(LOGITS, Y, None, "dlr")
    assert torch.allclose(value, torch.tensor([1.0, -0.8]))


def test_targeted_dlr_by_hand_with_three_classes_uses_the_third_logit_twice():
    # Sample 0: (z_t - z_y) / (z1 - (z3 + z3) / 2) = (2 - 1) / (3 - 1) = 0.5.
    # Sample 1: (-1 - 4) / (4 - (-1)) = -1.
    value = losses.objective(LOGITS, Y, TARGET, "dlr")
    assert torch.allclose(value, torch.tensor([0.5, -1.0]))


def test_dlr_with_four_classes_follows_the_paper():
    logits = torch.tensor([[4.0, 1.0, 3.0, 0.0]])
    y, target = torch.tensor([0]), torch.tensor([2])
    # Untargeted: (3 - 4) / (4 - 1); targeted: (3 - 4) / (4 - (1 + 0) / 2).
    assert losses.objective(logits, y, None, "dlr").item() == pytest.approx(-1 / 3)
    assert losses.objective(logits, y, target, "dlr").item() == pytest.approx(-1 / 3.5)


def test_dlr_with_two_classes_is_the_margin():
    # The ratio would be +-1 with a zero gradient; the denominator is 1 instead.
    logits = torch.tensor([[1.0, 3.0], [2.5, -1.0]])
    y, target = torch.tensor([0, 0]), torch.tensor([1, 1])
    for labels in (None, target):
        dlr = losses.objective(logits, y, labels, "dlr")
        assert torch.equal(dlr, losses.objective(logits, y, labels, "margin"))


@pytest.mark.parametrize("targeted", [False, True])
def test_dlr_ignores_shifting_and_scaling_the_logits(targeted):
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(16) % 10
    target = (y + 3) % 10 if targeted else None
    value = losses.objective(logits, y, target, "dlr")
    assert torch.allclose(losses.objective(7.0 * logits - 2.0, y, target, "dlr"), value)


def test_dlr_is_finite_where_the_top_logits_tie():
    logits = torch.tensor([[5.0, 5.0, 5.0, 1.0]], requires_grad=True)
    value = losses.objective(logits, torch.tensor([3]), None, "dlr")
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.isfinite(value).all() and value.item() > 0 and torch.isfinite(grad).all()
