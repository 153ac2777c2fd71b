"""Several records of one run competing for one number: the per-sample worst case.

A run may hold PGD-10 and PGD-50, FGSM and ``strong`` records for the same norm,
target mode and split. Its robust accuracy there is not the minimum of their
averages but the per-sample worst case: a sample counts as robust at eps only if
no record fooled it at a budget <= eps (``per_sample.fooled_at``, nested balls).
Records are merged only when they evaluated the same samples (the same
``per_sample.index``); of several sample sets the largest (the complete
evaluation) is chosen, and the choice is said in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..evaluate import attack_options
from ..trust import compare_flags, wilson
from .load import DEFAULT_SPLIT, AttackRecord, ReportRun
from .numbers import on_grid, value_at
from .style import NORM_ORDER, norm_name, plural, rank, target_label


class CellKey(NamedTuple):
    """What one robust-accuracy number is about: norm, target mode and split."""

    norm: str
    target: Any
    split: str = DEFAULT_SPLIT

    @property
    def title(self) -> str:
        """``L∞ untargeted``, ``L2 targeted (random), val split``."""
        split = "" if self.split == DEFAULT_SPLIT else f", {self.split} split"
        return f"{norm_name(self.norm)} {target_label(self.target)}{split}"

    @property
    def slug(self) -> str:
        target = "untargeted" if self.target is None else f"target-{self.target}"
        return "-".join([self.norm, str(target), *([] if self.split == "test" else [self.split])])

    def sort_key(self) -> tuple:
        return (self.target is not None, str(self.target), rank(self.norm, NORM_ORDER), self.split)


def cell_of(record: AttackRecord) -> CellKey:
    s = record.setting
    return CellKey(s.norm, s.target, s.split)


@dataclass
class Combined:
    """The worst case over a run's records of one cell, on one sample set."""

    key: CellKey
    records: list[AttackRecord]
    """The records combined (same samples)."""
    fooled_at: list[float | None]
    """Per sample, the smallest budget at which any combined record fooled it."""
    grid: list[float]
    """Every budget of the combined records, increasing."""
    skipped: list[AttackRecord] = field(default_factory=list)
    """Records of the cell on other sample sets, not merged."""
    why: str = ""
    """How the sample set was chosen, in words (empty when there was no choice)."""
    exact: bool = True
    """False when some record lacks per-sample results (then: minimum of averages)."""

    @property
    def n(self) -> int:
        return len(self.fooled_at) if self.exact else (self.records[0].curve.n_samples or 0)

    @property
    def clean_accuracy(self) -> float:
        """Of the samples evaluated (the same for every combined record)."""
        return self.records[0].curve.clean_accuracy

    def robust_count(self, eps: float) -> int:
        """Samples no combined record fooled at a budget <= ``eps``."""
        return sum(1 for f in self.fooled_at if f is None or f > eps + 1e-12)

    def accuracy_at(self, eps: float) -> float:
        """The worst-case accuracy at ``eps`` (any budget: fooled_at answers it)."""
        if not self.exact:
            return _fallback_at(self, eps)
        return self.robust_count(eps) / max(self.n, 1)

    def bound_at(self, eps: float) -> bool:
        """Whether :meth:`accuracy_at` is an upper bound at ``eps``: it lies between two
        measured budgets (the accuracy at the one below stands for it)."""
        return not on_grid(eps, [0.0, *self.grid])

    def interval_at(self, eps: float) -> tuple[float, float]:
        """The 95% Wilson interval of :meth:`accuracy_at`."""
        return wilson(round(self.accuracy_at(eps) * self.n), self.n)

    def covers(self, eps: float) -> bool:
        """Whether some combined record's grid reaches ``eps`` (else: not measured there)."""
        return bool(self.grid) and eps <= self.grid[-1] + 1e-12

    @property
    def names(self) -> str:
        """``PGD-10 + STRONG`` (the attacks combined)."""
        return " + ".join(r.short for r in self.records)

    @property
    def breaking(self) -> list[float | None]:
        """Each sample's breaking budget: the smallest grid eps that fooled it."""
        return list(self.fooled_at)


def _fallback_at(c: Combined, eps: float) -> float:
    return min(_fallback_values(c.records, eps))


def _sample_set(record: AttackRecord) -> tuple[int, ...] | None:
    index = record.curve.per_sample.get("index")
    fooled = record.curve.per_sample.get("fooled_at")
    if not index or fooled is None or len(fooled) != len(index):
        return None
    return tuple(index)


def _choice_words(chosen: list[AttackRecord], skipped: list[AttackRecord]) -> str:
    if not skipped:
        return ""
    n = chosen[0].curve.n_samples
    others = ", ".join(f"{r.short} ({plural(r.curve.n_samples or 0, 'sample')})" for r in skipped)
    return (
        f"used the complete evaluation on {plural(n or 0, 'sample')}; not merged: {others} "
        "(other samples: a worst case over different samples would mean nothing)"
    )


def combine(key: CellKey, records: Sequence[AttackRecord]) -> Combined:
    """The per-sample worst case over ``records`` (all of cell ``key``), on the largest
    sample set they share."""
    sets: dict[tuple[int, ...] | None, list[AttackRecord]] = {}
    for rec in records:
        sets.setdefault(_sample_set(rec), []).append(rec)
    best = max(
        sets,
        key=lambda s: (s is not None, len(s or ()), len(sets[s]), sorted(r.name for r in sets[s])),
    )
    chosen = sorted(sets[best], key=lambda r: r.name)
    skipped = [r for s, rs in sets.items() if s != best for r in rs]
    grid = sorted({e for r in chosen for e in r.curve.epsilons})
    if best is None:  # no per-sample results: the minimum of the averages
        why = _choice_words(chosen, skipped)
        return Combined(key, chosen, [], grid, skipped, why, exact=False)
    fooled: list[float | None] = [None] * len(best)
    for rec in chosen:
        for i, f in enumerate(rec.curve.per_sample["fooled_at"]):
            if f is not None and (fooled[i] is None or f < fooled[i]):
                fooled[i] = float(f)
    return Combined(key, chosen, fooled, grid, skipped, _choice_words(chosen, skipped))


def _fallback_values(records: Sequence[AttackRecord], eps: float) -> list[float]:
    values = [value_at(r.curve, eps)[0] for r in records]
    return [v for v in values if v is not None] or [float("nan")]


_CACHE: dict[int, tuple[ReportRun, int, dict[CellKey, Combined]]] = {}


def run_cells(run: ReportRun) -> dict[CellKey, Combined]:
    """Every cell of ``run``, its records combined (computed once per run object)."""
    hit = _CACHE.get(id(run))
    if hit is not None and hit[0] is run and hit[1] == len(run.records):
        return hit[2]
    result = _run_cells(run)
    _CACHE[id(run)] = (run, len(run.records), result)
    return result


def _run_cells(run: ReportRun) -> dict[CellKey, Combined]:
    by_cell: dict[CellKey, list[AttackRecord]] = {}
    for rec in run.records:
        by_cell.setdefault(cell_of(rec), []).append(rec)
    return {key: combine(key, by_cell[key]) for key in sorted(by_cell, key=CellKey.sort_key)}


def run_warnings(run: ReportRun) -> list[tuple[str, str]]:
    """``(what, message)``: every curve's flags and the cross-attack flags of each cell."""
    found: list[tuple[str, str]] = []
    for rec in sorted(run.records, key=lambda r: r.name):
        found += [(rec.label, f["message"]) for f in rec.curve.flags]
    for key, cell in run_cells(run).items():
        # What the attacks aim at: misclassification (untargeted), the target (targeted).
        curves = {
            r.short: (
                r.curve.epsilons,
                _not_reached(r) if r.setting.target is not None else r.curve.accuracy,
            )
            for r in cell.records
        }
        iterative = {r.short: _iterates(r.setting.attack) for r in cell.records}
        found += [(key.title, f["message"]) for f in compare_flags(curves, iterative)]
    return list(dict.fromkeys(found))


def _not_reached(record: AttackRecord) -> list[float]:
    return [1.0 - rate for rate in record.curve.success_rate]


def _iterates(attack: str) -> bool:
    """Whether an attack iterates (takes steps or queries), from its signature."""
    try:
        options = attack_options(attack)
    except ValueError:  # an attack of a record that this advkit does not know
        return True
    return "steps" in options or "queries" in options


"""Attacks that take one gradient step (for the one-step-stronger check)."""
