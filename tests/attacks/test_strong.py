"""The strong evaluation: its stages, its cost log, its optimum, and AutoAttack as reference.

The property suite (tests/attacks/test_properties.py) checks strong's
contract with every other attack; these tests check what is its own.
"""

import pytest
import torch
from torch import nn

import attacks
from advkit import robustness_curve
from attacks.strong import STRENGTHS


@pytest.fixture(scope="module")
def mlp(digits, train_digits) -> nn.Module:
    return train_digits(digits, "mlp", epochs=3)


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_strong_reaches_the_closed_form_optimum_on_a_linear_model(linear_problem, norm):
    eps = {"linf": 0.1, "l2": 0.4}[norm]
    p = linear_problem
    x_adv = attacks.strong(p.model, p.x, p.y, eps, norm=norm, clip=None, strength="fast")
    optimum = p.robust_accuracy(eps, norm)
    assert 0.2 < optimum < 0.9  # the budget matters
    assert correct(p.model, x_adv, p.y).double().mean().item() == pytest.approx(optimum, abs=1e-9)


def test_stage_log_sums_to_the_cost_the_curve_records(mlp, digits):
    x, y = digits.x_test[:48], digits.y_test[:48]
    # Per eps (the descend method shares one call's passes out over the eps it served).
    curve = robustness_curve(
        mlp, x, y, (0.0, 0.05, 0.1), attack="strong", norm="linf", strength="fast",
        batch_size=16, method="per-eps",
    )  # fmt: skip
    for check in curve.checks[1:]:
        stages = check["stages"]
        assert [s["stage"] for s in stages][:2] == ["apgd-ce", "apgd-dlr-top1"]
        attacked = stages[0]["attacked"]
        # The curve also counts its own forward pass on the result of each batch.
        assert sum(s["forward"] for s in stages) + attacked == check["forward"]
        assert sum(s["backward"] for s in stages) == check["backward"] > 0
        # Each stage attacks the survivors of those before it.
        for before, after in zip(stages, stages[1:], strict=False):
            assert after["attacked"] == before["attacked"] - before["fooled"]


def test_later_stages_fool_survivors_and_their_points_are_kept(mlp, digits):
    """The top-k stages fool samples that the first stage left, and their points are kept."""
    x, y = digits.x_test[:120], digits.y_test[:120]
    log: list[dict] = []
    x_adv = attacks.strong(mlp, x, y, 0.07, norm="linf", strength="fast", log=log)
    fooled_late = sum(entry["fooled"] for entry in log[1:])
    assert fooled_late > 0
    assert (~correct(mlp, x_adv, y)).sum().item() == sum(entry["fooled"] for entry in log)


def test_rounds_add_stages_and_explicit_options_override_the_preset(mlp, digits):
    x, y = digits.x_test[:60], digits.y_test[:60]
    log: list[dict] = []
    attacks.strong(
        mlp, x, y, 0.3, norm="linf", targets=2, rounds=2, round_targets=2, queries=5, log=log
    )
    stages = [entry["stage"] for entry in log]
    assert stages[0] == "apgd-ce"
    assert set(stages) <= {"apgd-ce", "apgd-dlr-top1", "apgd-dlr-top2",
                           "apgd-dlr-near1-round2", "apgd-dlr-near2-round2", "square"}  # fmt: skip
    assert STRENGTHS["fast"][3] == 1 and STRENGTHS["default"][3] > 1


def test_later_rounds_spend_restarts_only_on_survivors_near_success(mlp, digits):
    """Rounds after the first attack the survivors whose targeted DLR came within NEAR."""
    x, y = digits.x_test[:120], digits.y_test[:120]
    log: list[dict] = []
    x_adv = attacks.strong(mlp, x, y, 0.05, norm="linf", targets=3, rounds=3, log=log)
    by_stage = {entry["stage"]: entry for entry in log}
    survivors = by_stage["apgd-dlr-top3"]["attacked"] - by_stage["apgd-dlr-top3"]["fooled"]
    near = by_stage["apgd-dlr-near1-round2"]
    assert 0 < near["attacked"] < survivors  # some, not all, came near
    assert by_stage["apgd-dlr-near1-round3"]["attacked"] <= near["attacked"] - near["fooled"]
    # The restarts run round_steps (100) steps: more passes per attacked sample than 25.
    assert near["backward"] > 50 * near["attacked"]
    assert (~correct(mlp, x_adv, y)).sum().item() == sum(entry["fooled"] for entry in log)


def test_apgd_misclassify_keeps_every_misclassification_of_a_targeted_run(mlp, digits):
    """Same starts and steps: judged by misclassification, a superset of samples is fooled."""
    x, y = digits.x_test[:120], digits.y_test[:120]
    with torch.no_grad():
        # The least likely class: a run toward it often passes through another class.
        target = mlp(x).scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, -2]
    fooled = {}
    for misclassify in (False, True):
        x_adv = attacks.apgd(
            mlp, x, y, 0.1, steps=20, loss="ce", target=target, misclassify=misclassify
        )
        fooled[misclassify] = ~correct(mlp, x_adv, y)
    assert (fooled[True] | ~fooled[False]).all()
    assert fooled[True].sum() > fooled[False].sum() + 5
    with pytest.raises(ValueError, match="misclassify"):
        attacks.apgd(mlp, x, y, 0.1, misclassify=1)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("strength", "extreme"),
        ("rounds", 0),
        ("targets", -1),
        ("queries", 1.5),
        ("steps", 0),
        ("round_steps", 0),
        ("round_targets", -1),
    ],
)
def test_bad_options_raise_naming_them(option, value):
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match=option):
        attacks.strong(model, x, y, 0.1, **{option: value})


@pytest.mark.slow
def test_strong_is_as_strong_as_autoattack_standard(digits, train_digits, norm="linf", eps=0.1):
    """Against pyautoattack's standard sequence (APGD-CE, APGD-T, FAB-T, Square) on 60 images.

    The full comparison (every model and budget, all 360 images, and the time
    ratio) is the benchmark: `python -m scripts.bench --only strong`.
    """
    reference = pytest.importorskip("scripts.bench.reference")
    model = train_digits(digits)
    x, y = digits.x_test[:60], digits.y_test[:60]
    theirs = reference.evaluate(model, x, y, eps, norm=norm)
    ours = correct(model, attacks.strong(model, x, y, eps, norm=norm), y)
    assert theirs.robust.sum() < correct(model, x, y).sum() - 10  # the budget matters
    assert theirs.robust.sum() > 5  # and leaves robust samples to find
    # At most one sample more survives strong than AutoAttack.
    assert ours.sum().item() <= theirs.robust.sum().item() + 1
