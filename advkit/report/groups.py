"""Runs that differ only by their seed form one group; datasets never mix.

A group's number is the mean over its seeds, with the spread (min-max) and each
seed's value kept beside it, so a table, a heatmap cell or a curve's band can
show how much of a difference is the seed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .combine import CellKey, Combined, run_cells
from .load import ReportRun
from .style import MODEL_ORDER, OPTIMIZER_ORDER, plural, rank

# Config entries that change with the seed alone, left out of a group's identity.
_SEED_ONLY = ("seed", "sizes", "options", "versions", "device")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _SEED_ONLY}
    return value


def group_key(run: ReportRun) -> str:
    """Everything of the run's config but its seed (and what the seed decides)."""
    config = run.config or {}
    entries = {k: v for k, v in config.items() if k not in ("versions", "train_config")}
    train = config.get("train_config")
    if isinstance(train, dict):  # what the user asked for, data_dir aside
        entries = {"train": {k: v for k, v in train.items() if k not in ("data_dir",)}}
        entries["dataset"] = {k: (config.get("dataset") or {}).get(k) for k in ("name", "sha256")}
    return json.dumps(_strip(entries), sort_keys=True, default=str)


@dataclass
class Group:
    """Runs that differ only by seed (one run when nothing repeats)."""

    runs: list[ReportRun]
    label: str = ""

    @property
    def first(self) -> ReportRun:
        return self.runs[0]

    @property
    def model(self) -> str:
        return self.first.model

    @property
    def optimizer(self) -> str:
        return self.first.optimizer

    @property
    def dataset(self) -> str:
        return self.first.dataset

    @property
    def adversarial(self) -> bool:
        """Whether the group was trained adversarially."""
        return self.first.adversarial is not None

    @property
    def training(self) -> str:
        """``standard`` or the training attack (``PGD-AT ε=0.1``)."""
        return self.first.training

    @property
    def row(self) -> str:
        """The model, with the training attack when adversarially trained."""
        return f"{self.model} · {self.training}" if self.adversarial else self.model

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def seeds_text(self) -> str:
        """``seed 0`` or ``3 seeds (0, 1, 2)``."""
        if len(self.runs) == 1:
            return f"seed {self.seeds[0]}"
        return f"{plural(len(self.runs), 'seed')} ({', '.join(map(str, self.seeds))})"

    def sort_key(self) -> tuple:
        return (
            rank(self.model, MODEL_ORDER), self.adversarial,
            rank(self.optimizer, OPTIMIZER_ORDER), self.label,
        )  # fmt: skip


@dataclass
class Stat:
    """One number over a group's seeds: mean, min, max and each seed's value."""

    values: list[float]
    seeds: list[int]
    n: list[int] = field(default_factory=list)
    """Samples each value rests on."""
    intervals: list[tuple[float, float]] = field(default_factory=list)
    bound: bool = False
    """Whether some value is an upper bound: the budget lies between two measured ones."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def band(self) -> tuple[float, float]:
        """From the lowest 95% lower bound to the highest upper bound over the seeds
        (sampling and seed spread together); the value itself without intervals."""
        if not self.intervals:
            return (self.lo, self.hi)
        return (min(i[0] for i in self.intervals), max(i[1] for i in self.intervals))


def group_runs(report_runs: Sequence[ReportRun]) -> list[Group]:
    """The runs grouped by everything but their seed, in model, optimizer order."""
    by_key: dict[str, list[ReportRun]] = {}
    for run in report_runs:
        by_key.setdefault(group_key(run), []).append(run)
    groups = [Group(sorted(rs, key=lambda r: (r.seed, r.name))) for rs in by_key.values()]
    _label(groups)
    return sorted(groups, key=Group.sort_key)


def _label(groups: list[Group]) -> None:
    """``mlp · adam``; when two groups of one dataset share it, their run names instead."""
    for g in groups:
        g.label = g.first.label
    seen: dict[tuple[str, str], int] = {}
    for g in groups:
        seen[(g.dataset, g.label)] = seen.get((g.dataset, g.label), 0) + 1
    for g in groups:
        if seen[(g.dataset, g.label)] > 1:
            g.label = f"{g.label} ({g.first.name})"


def by_dataset(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups per dataset, datasets in name order."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.dataset, []).append(g)
    return {name: out[name] for name in sorted(out)}


def cells(group: Group) -> list[dict[CellKey, Combined]]:
    """Per run of the group, its combined cells."""
    return [run_cells(run) for run in group.runs]


def cell_stat(group: Group, key: CellKey, eps: float) -> Stat | None:
    """The group's worst-case robust accuracy at ``eps`` in cell ``key``; None when
    no seed has that cell measured up to ``eps``."""
    values, seeds, ns, intervals, bound = [], [], [], [], False
    for run, run_cells_ in zip(group.runs, cells(group), strict=True):
        c = run_cells_.get(key)
        if c is None or not c.covers(eps):
            continue
        values.append(c.accuracy_at(eps))
        seeds.append(run.seed)
        ns.append(c.n)
        intervals.append(c.interval_at(eps))
        bound = bound or c.bound_at(eps)
    return Stat(values, seeds, ns, intervals, bound) if values else None


def scalar_stat(group: Group, values: Sequence[float | None]) -> Stat | None:
    """A per-run number (test accuracy, training seconds) over the group's seeds."""
    kept = [(v, r.seed) for v, r in zip(values, group.runs, strict=True) if v is not None]
    if not kept:
        return None
    return Stat([v for v, _ in kept], [s for _, s in kept])
