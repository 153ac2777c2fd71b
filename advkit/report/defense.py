"""Passive defenses in the report: naive against adaptive attacks, beside the
undefended model.

A record with ``settings.defense`` attacked the model wrapped in that defense: a
different model, so it is kept out of the run's worst case (`load.defended`).
Records that differ only in ``adaptive`` are one pair: the naive attack (gradients
through the defense as it is) and the adaptive ones (BPDA, EOT). The undefended
counterpart is the run's record with the same settings and no defense.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from .canvas import new_figure
from .figures import _mark_eps, _style_curve_axes
from .load import AttackRecord, ReportRun
from .numbers import EpsChoice
from .style import FIG_WIDTH, eps_text, fmt, norm_name

_NOT_IDENTITY = ("defense", "adaptive")


def _identity(record: AttackRecord, *, keep_defense: bool) -> str:
    assert record.stored is not None
    d = record.stored.settings.to_dict()
    drop = ("adaptive",) if keep_defense else _NOT_IDENTITY
    return repr(sorted((k, repr(v)) for k, v in d.items() if k not in drop))


@dataclass
class DefensePair:
    """One defense on one run under one attack setting: naive and adaptive records."""

    run: ReportRun
    defense: str
    naive: AttackRecord | None
    adaptive: list[AttackRecord] = field(default_factory=list)
    undefended: AttackRecord | None = None

    @property
    def norm(self) -> str:
        first = self.naive or self.adaptive[0]
        return first.setting.norm

    @property
    def attack(self) -> str:
        return (self.naive or self.adaptive[0]).short

    @property
    def title(self) -> str:
        first = self.naive or self.adaptive[0]
        return f"{self.run.label}, defense {self.defense}: {first.short} {norm_name(self.norm)}"


def adaptive_name(record: AttackRecord) -> str:
    """``naive``, ``BPDA``, ``EOT (4 draws)``."""
    a = record.stored.settings.adaptive if record.stored else None
    if not a:
        return "naive"
    if a.startswith("eot:"):
        return f"EOT ({a.split(':', 1)[1]} draws)"
    return a.upper()


def defense_pairs(report_runs: Sequence[ReportRun]) -> list[DefensePair]:
    """Every run's defended records, paired by everything but ``adaptive``."""
    pairs = []
    for run in report_runs:
        by_key: dict[str, list[AttackRecord]] = {}
        for rec in run.defended:
            by_key.setdefault(_identity(rec, keep_defense=True), []).append(rec)
        bare = {_identity(r, keep_defense=False): r for r in run.records}
        for recs in by_key.values():
            recs = sorted(recs, key=lambda r: r.name)
            naive = next((r for r in recs if adaptive_name(r) == "naive"), None)
            assert recs[0].stored is not None
            pairs.append(DefensePair(
                run, str(recs[0].stored.settings.defense), naive,
                [r for r in recs if r is not naive],
                bare.get(_identity(recs[0], keep_defense=False)),
            ))  # fmt: skip
    return pairs


def at_eps(record: AttackRecord | None, eps: float) -> tuple[float, tuple[float, float]] | None:
    """The record's accuracy and 95% interval at a grid budget ``eps``, else None."""
    if record is None:
        return None
    c = record.curve
    for i, e in enumerate(c.epsilons):
        if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
            lo, hi = c.intervals[i] if i < len(c.intervals) else (c.accuracy[i],) * 2
            return c.accuracy[i], (lo, hi)
    return None


def defense_figure(pair: DefensePair, choice: EpsChoice | None) -> Figure:
    """Accuracy against eps: the naive attack (dashed), each adaptive one (solid),
    the undefended model (black), each with its 95% band."""
    fig = new_figure(FIG_WIDTH, 4.8)
    ax = fig.subplots()
    lines: list[tuple[AttackRecord | None, str, dict[str, Any]]] = [
        (pair.naive, "naive attack on the defended model", {"color": "#e6550d", "ls": "--"}),
        *[(r, f"{adaptive_name(r)} on the defended model", {"color": "#6a3d9a", "ls": "-"})
          for r in pair.adaptive],
        (pair.undefended, "same attack, undefended model", {"color": "#222222", "ls": ":"}),
    ]  # fmt: skip
    for rec, label, kw in lines:
        if rec is None:
            continue
        c = rec.curve
        if len(c.intervals) == len(c.epsilons):
            ax.fill_between(c.epsilons, [i[0] for i in c.intervals], [i[1] for i in c.intervals],
                            color=kw["color"], alpha=0.12, linewidth=0)  # fmt: skip
        ax.plot(c.epsilons, c.accuracy, color=kw["color"], linestyle=kw["ls"], marker="o",
                markersize=4, linewidth=2, label=label)  # fmt: skip
    _style_curve_axes(ax, pair.norm, "accuracy under attack")
    if choice is not None:
        _mark_eps(ax, choice.eps)
    ax.legend(loc="upper right", fontsize=9)
    ax.set_title(f"{pair.title}\nband: 95% interval")
    return fig


def _value(found: tuple[float, tuple[float, float]] | None) -> str:
    if found is None:
        return "—"
    v, (lo, hi) = found
    return f"{fmt(v, 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]"


def defense_rows(pairs: Sequence[DefensePair], eps: dict[str, float]) -> list[list[str]]:
    """Per pair and adaptive attack: run, defense, attack, naive, adaptive, undefended at ε*."""
    rows = []
    for p in pairs:
        e = eps.get(p.norm)
        if e is None:
            continue
        adaptive: list[AttackRecord | None] = list(p.adaptive) or [None]
        for a in adaptive:
            rows.append([
                p.run.label, p.defense, p.attack, f"{eps_text(e)}",
                _value(at_eps(p.naive, e)),
                f"{adaptive_name(a)}: {_value(at_eps(a, e))}" if a is not None else "—",
                _value(at_eps(p.undefended, e)),
            ])  # fmt: skip
    return rows


def warning_sentences(pairs: Sequence[DefensePair], eps: dict[str, float]) -> list[str]:
    """The lecture's warning in numbers: what the naive attack claims, what the
    adaptive one finds, against the undefended model (intervals decide the words)."""
    out = []
    for p in pairs:
        e = eps.get(p.norm)
        naive, bare = at_eps(p.naive, e or -1.0), at_eps(p.undefended, e or -1.0)
        for a in p.adaptive:
            adapt = at_eps(a, e or -1.0)
            if e is None or naive is None or adapt is None:
                continue
            s = (f"{p.run.label} with {p.defense}, {p.attack} at ε* = {eps_text(e)}: the naive "
                 f"attack reports {fmt(naive[0], 3)}, {adaptive_name(a)} {fmt(adapt[0], 3)}")  # fmt: skip
            s += f", the undefended model {fmt(bare[0], 3)}" if bare else ""
            if adapt[1][1] < naive[1][0]:
                s += (f". The naive number overstates the defense by "
                      f"{100 * (naive[0] - adapt[0]):.0f} points: a defense fails once the "
                      "attacker knows it")  # fmt: skip
            else:
                s += ". The naive and adaptive intervals overlap: no difference shown here"
            if bare is not None:
                overlap = adapt[1][0] <= bare[1][1] and bare[1][0] <= adapt[1][1]
                s += ("; against the adaptive attack the defended model is indistinguishable "
                      "from the undefended one" if overlap else
                      f"; it keeps {100 * (adapt[0] - bare[0]):+.0f} points over the "
                      "undefended model even against the adaptive attack")  # fmt: skip
            out.append(s + ".")
    return out
