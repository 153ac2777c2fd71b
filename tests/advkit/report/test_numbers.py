"""Value at a budget, area under the curve, the budget choice, the strongest attack."""

from pathlib import Path

import pytest

from advkit import report
from advkit.report import numbers


def curve(accuracy, epsilons=(0.0, 0.1, 0.2), cost=None):
    return report.Curve(
        epsilons=list(epsilons),
        accuracy=list(accuracy),
        success_rate=[1 - a for a in accuracy],
        clean_accuracy=accuracy[0],
        cost=cost,
    )


def record(name, attack, accuracy, *, epsilons=(0.0, 0.1, 0.2), cost=None, target=None):
    return report.AttackRecord(
        path=Path(f"{name}.json"),
        name=name,
        setting=report.Setting(attack, "linf", target, "ce"),
        curve=curve(accuracy, epsilons, cost),
    )


def run(*records):
    loaded = report.ReportRun(
        path=Path("r"), name="r", model="mlp", optimizer="adam", dataset="digits", lr=None,
        schedule=None, warmup_epochs=0, metric_rows=0, epochs=[], test_accuracy=None,
        train_seconds=None, finished=True, records=list(records),
    )  # fmt: skip
    return loaded


def test_value_at_is_the_json_number_or_a_marked_upper_bound():
    c = report.Curve(
        epsilons=[0.05, 0.1, 0.2], accuracy=[0.9, 0.6, 0.1], success_rate=[0, 0, 0],
        clean_accuracy=1.0,
    )  # fmt: skip
    assert report.value_at(c, 0.1) == (0.6, False)
    # Between two budgets: the accuracy at the one below, which fooled no more.
    assert report.value_at(c, 0.15) == (0.6, True)
    assert report.value_at(c, 0.1999) == (0.6, True)
    assert report.value_at(c, 0.025) == (1.0, True)  # clean accuracy at 0
    assert report.value_at(c, 0.3) == (None, False)  # never extrapolated
    assert report.area_under_curve(c) == pytest.approx(
        (0.05 * 1.9 / 2 + 0.05 * 1.5 / 2 + 0.1 * 0.7 / 2) / 0.2
    )


def test_the_strongest_attack_is_what_it_achieved_not_its_name():
    # A one-step attack that did better than the iterative one is the strongest.
    pgd = record("pgd-linf-untargeted", "pgd", [0.9, 0.5, 0.2])
    fgsm = record("fgsm-linf-untargeted", "fgsm", [0.9, 0.3, 0.2])
    targeted = record("pgd-linf-target-random", "pgd", [0.9, 0.0, 0.0], target="random")
    r = run(pgd, fgsm, targeted)
    assert report.strongest_record(r, "linf", 0.1) is fgsm  # targeted ones are not compared
    # Equal accuracy at eps*: the smaller area under the curve wins.
    assert report.strongest_record(r, "linf", 0.2) is fgsm
    assert report.strongest_record(r, "l2", 0.1) is None
    # A record whose grid stops short of eps* comes last.
    short = record("aaa-linf-untargeted", "aaa", [0.9, 0.0], epsilons=(0.0, 0.05))
    assert numbers.strongest([short, pgd], 0.1) is pgd


def test_equal_achievements_go_to_the_cheaper_attack():
    dear = record("dear", "pgd", [0.9, 0.3, 0.1], cost=100)
    cheap = record("cheap", "square", [0.9, 0.3, 0.1], cost=20)
    uncounted = record("uncounted", "abc", [0.9, 0.3, 0.1])
    assert numbers.strongest([dear, uncounted, cheap], 0.1) is cheap
    # Without counted costs, achievement alone (then the name, so ties break the same way).
    assert numbers.strongest([record("b", "x", [0.9, 0.3, 0.1]), uncounted], 0.1).name == "b"


def test_the_budget_is_the_middle_of_the_common_grid():
    a = run(record("a", "pgd", [0.9, 0.5, 0.2]))
    b = run(
        record("b", "pgd", [0.9, 0.5, 0.2]),
        record("c", "fgsm", [0.9, 0.6, 0.3], epsilons=(0.0, 0.05, 0.15)),
    )
    chosen = report.choose_eps([a, b], {"linf": None, "l2": None})
    assert list(chosen) == ["linf"] and chosen["linf"].eps == 0.1
    assert chosen["linf"].how == "the middle budget of the grid every run was attacked on"
    c = run(record("d", "pgd", [0.9, 0.5], epsilons=(0.0, 0.3)))
    chosen = report.choose_eps([a, c], {"linf": None})
    assert chosen["linf"].eps == 0.2 and "no budget common" in chosen["linf"].how
    assert report.choose_eps([a], {"linf": 0.15})["linf"].how == "set with --eps-linf"
