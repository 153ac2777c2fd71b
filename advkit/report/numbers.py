"""The report's few derived numbers: a curve's value at a budget, the area under
it, the budget at which runs are compared, and which attack counts as a run's
strongest.

"Strongest" is measured, never read from an attack's name: among a run's
untargeted records under a norm, the one that left the lowest accuracy at the
chosen budget, then the lowest area under the curve, then (when the records
count it) the lowest cost in forward and backward passes per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .load import AttackRecord, Curve, ReportRun
from .style import NORM_ORDER, rank


def _curve_points(curve: Curve) -> tuple[list[float], list[float]]:
    """Epsilons and accuracies, with the clean accuracy at eps 0 when the grid lacks it."""
    xs, ys = list(curve.epsilons), list(curve.accuracy)
    if xs[0] > 0:
        xs, ys = [0.0, *xs], [curve.clean_accuracy, *ys]
    return xs, ys


def value_at(curve: Curve, eps: float) -> tuple[float | None, bool]:
    """The curve's accuracy at ``eps``: ``(value, bound)``.

    The JSON number itself when ``eps`` is on the grid. Between two budgets of
    the grid, the accuracy measured at the largest budget below ``eps``
    (``bound`` True): a sample fooled there is fooled at any larger budget, so
    the accuracy at ``eps`` is at most that; an interpolation would be a guess.
    None beyond the largest budget (no extrapolation).
    """
    for e, a in zip(curve.epsilons, curve.accuracy, strict=True):
        if on_grid(eps, [e]):
            return a, False
    xs, ys = _curve_points(curve)
    if eps < xs[0] or eps > xs[-1]:
        return None, False
    below = max(i for i, x in enumerate(xs) if x <= eps)
    return ys[below], True


def on_grid(eps: float, grid: Sequence[float]) -> bool:
    """Whether ``eps`` is one of the budgets of ``grid`` (up to float rounding)."""
    return any(math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12) for e in grid)


def area_under_curve(curve: Curve) -> float | None:
    """Area under accuracy vs eps over ``[0, max eps]``, divided by ``max eps``.

    1 means no accuracy lost anywhere on the grid, 0 no accuracy at all; the
    clean accuracy stands at eps 0 when the grid lacks it. None for a grid of
    eps 0 only.
    """
    xs, ys = _curve_points(curve)
    if xs[-1] <= 0:
        return None
    area = sum(
        (x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False)
    )
    return area / xs[-1]


@dataclass
class EpsChoice:
    """The budget at which a norm's robust accuracies are compared."""

    norm: str
    eps: float
    how: str  # "given", "middle of the common grid", "middle of all grids (no common one)"


def strength_key(record: AttackRecord, eps: float | None) -> tuple:
    """Sort key, strongest first: lowest accuracy at ``eps`` (a record whose grid
    stops short of ``eps`` last), lowest AUC, lowest counted cost (records
    without a cost after those with one), then the name so ties always break
    the same way."""
    value = value_at(record.curve, eps)[0] if eps is not None else None
    auc = area_under_curve(record.curve)
    cost = record.curve.cost
    return (
        value is None,
        value if value is not None else 0.0,
        auc is None,
        auc if auc is not None else 0.0,
        cost is None,
        cost if cost is not None else 0.0,
        record.name,
    )


def strongest(records: Iterable[AttackRecord], eps: float | None) -> AttackRecord | None:
    """The record of ``records`` that achieved most at ``eps`` (see :func:`strength_key`)."""
    return min(records, key=lambda r: strength_key(r, eps), default=None)


def _untargeted(run: ReportRun, norm: str) -> list[AttackRecord]:
    return [r for r in run.records if r.setting.norm == norm and r.setting.target is None]


def strongest_record(run: ReportRun, norm: str, eps: float | None) -> AttackRecord | None:
    """The run's strongest untargeted attack under ``norm``, judged at budget ``eps``."""
    return strongest(_untargeted(run, norm), eps)


def _grid(run: ReportRun, norm: str) -> set[float]:
    """The nonzero budgets the run was attacked at under ``norm`` (untargeted when it has any)."""
    records = _untargeted(run, norm) or [r for r in run.records if r.setting.norm == norm]
    return {e for r in records for e in r.curve.epsilons if e > 0}


def choose_eps(
    report_runs: Sequence[ReportRun], given: dict[str, float | None]
) -> dict[str, EpsChoice]:
    """The comparison budget of each norm that has attack records.

    The given eps when there is one; else the middle nonzero budget that every
    run's untargeted attacks share; else the middle of all their budgets (then
    some values are bounds, and marked).
    """
    norms = {r.setting.norm for run in report_runs for r in run.records}
    choices = {}
    for norm in sorted(norms, key=lambda n: rank(n, NORM_ORDER)):
        attacked = [run for run in report_runs if any(r.setting.norm == norm for r in run.records)]
        grids = [_grid(run, norm) for run in attacked]
        eps = given.get(norm)
        if eps is not None:
            choices[norm] = EpsChoice(norm, float(eps), f"set with --eps-{norm}")
            continue
        common = sorted(set.intersection(*grids))
        how = "the middle budget of the grid every run was attacked on"
        if not common:
            common = sorted(set.union(*grids))
            how = (
                "the middle of all budgets (no budget common to every run, so some "
                "values are upper bounds, marked ≤)"
            )
        if common:  # else only eps 0 anywhere
            choices[norm] = EpsChoice(norm, common[(len(common) - 1) // 2], how)
    return choices
