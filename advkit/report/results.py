"""The page's tables and prose, as data the template lays out: results per group
(mean, spread, interval, samples, attacks), which records were combined, warnings,
the cost of each stage of ``strong`` records, and sentences generated from the
numbers that never call a difference inside the intervals a finding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .combine import CellKey, Combined, run_cells, run_warnings
from .groups import Group, Stat, cell_stat, scalar_stat
from .load import ReportRun
from .numbers import EpsChoice
from .plan import dataset_cells, headline_cells
from .style import eps_text, fmt, model_color, plural, seconds_text
from .tables import MD_COLUMNS, NUMERIC, Row, cell_text


@dataclass
class Cell:
    """One HTML table cell: its text, a second smaller line, its class, a swatch, a tooltip."""

    text: str
    kind: str = ""
    swatch: str | None = None
    sub: str = ""
    tip: str = ""


@dataclass
class Head:
    """One HTML header cell, with an optional second, smaller line."""

    text: str
    sub: str = ""


@dataclass
class Table:
    """An HTML table: header cells and rows of cells (the template draws it)."""

    head: list[Head]
    rows: list[list[Cell]]


BOUND_TIP = (
    "ε* lies between two measured budgets: the accuracy measured at the largest budget "
    "below it, an upper bound (a sample fooled there is fooled at any larger budget)"
)


def _stat_cell(stat: Stat | None, digits: int = 3) -> Cell:
    if stat is None:
        return Cell("—", "num")
    per_seed = ", ".join(
        f"seed {s}: {fmt(v, digits)}" for s, v in zip(stat.seeds, stat.values, strict=True)
    )
    mark, why = ("≤", f"; {BOUND_TIP}") if stat.bound else ("", "")
    if len(stat.values) == 1:
        sub = ""
        if stat.intervals:
            lo, hi = stat.intervals[0]
            sub = f"[{fmt(lo, digits)}, {fmt(hi, digits)}] · n={stat.n[0]}"
        return Cell(mark + fmt(stat.mean, digits), "num", sub=sub, tip=per_seed + why)
    n = f" · n={'/'.join(map(str, sorted(set(stat.n))))}" if stat.n else ""
    sub = f"{len(stat.values)} seeds: {fmt(stat.lo, digits)}–{fmt(stat.hi, digits)}{n}"
    return Cell(mark + fmt(stat.mean, digits), "num", sub=sub, tip=per_seed + why)


def _attacks_of(group: Group, key: CellKey) -> str:
    names = {run_cells(r)[key].names for r in group.runs if key in run_cells(r)}
    return " | ".join(sorted(names))


def results_table(groups: Sequence[Group], chosen: dict[str, EpsChoice]) -> Table:
    """One line per group of one dataset: seeds, test accuracy, per headline cell the
    worst-case robust accuracy at ε* (interval, samples, attacks), training time."""
    cells = headline_cells(dataset_cells(groups))
    cells = [c for c in cells if c.norm in chosen]
    head = [Head("group"), Head("seeds"), Head("test accuracy", "mean; range over seeds")]
    for key in cells:
        head.append(Head(f"{key.title} at ε* = {eps_text(chosen[key.norm].eps)}",
                         "worst case over the attacks; 95% interval · samples"))  # fmt: skip
        head.append(Head("attacks combined"))
    head += [Head("training time"), Head("warnings")]
    rows = []
    for g in groups:
        row = [Cell(g.label, swatch=model_color(g.model)), Cell(g.seeds_text)]
        row.append(_stat_cell(scalar_stat(g, [r.test_accuracy for r in g.runs])))
        for key in cells:
            row.append(_stat_cell(cell_stat(g, key, chosen[key.norm].eps)))
            row.append(Cell(_attacks_of(g, key) or "—", "wrap"))
        secs = scalar_stat(g, [r.train_seconds for r in g.runs])
        row.append(Cell(seconds_text(secs.mean if secs else None), "num"))
        count = sum(len(run_warnings(r)) for r in g.runs)
        row.append(Cell("none" if not count else f"⚠ {count} (below)"))
        rows.append(row)
    return Table(head, rows)


def combined_table(report_runs: Sequence[ReportRun]) -> Table:
    """Per run and cell: the records combined per sample, the samples, what was left out."""
    head = [Head("run"), Head("numbers about"), Head("records combined (worst case per sample)"),
            Head("samples"), Head("choice")]  # fmt: skip
    rows = []
    for run in report_runs:
        for key, c in run_cells(run).items():
            how = c.why or ("one record" if len(c.records) == 1 else "same samples: merged")
            if not c.exact:
                how += "; no per-sample results: the lowest of the records' accuracies"
            rows.append([Cell(run.name), Cell(key.title), Cell(c.names, "wrap"),
                         Cell(str(c.n), "num"), Cell(how, "wrap")])  # fmt: skip
    return Table(head, rows)


def warnings_list(report_runs: Sequence[ReportRun]) -> list[dict[str, str]]:
    """Every flag of every curve and across a run's attacks, in plain language."""
    return [
        {"run": run.name, "what": what, "message": message}
        for run in report_runs
        for what, message in run_warnings(run)
    ]


def stage_table(report_runs: Sequence[ReportRun]) -> Table:
    """Per ``strong`` record (or any staged attack) and stage: samples attacked and
    fooled, forward and backward passes, summed over the budgets."""
    head = [Head("run"), Head("attack"), Head("stage"), Head("attacked"), Head("fooled"),
            Head("forward passes"), Head("backward passes"), Head("passes per attacked sample")]  # fmt: skip
    rows = []
    for run in report_runs:
        for rec in sorted(run.records, key=lambda r: r.name):
            totals: dict[str, dict[str, float]] = {}
            for check in rec.curve.checks:
                for st in check.get("stages") or []:
                    into = totals.setdefault(str(st.get("stage")), {})
                    for k in ("attacked", "fooled", "forward", "backward"):
                        into[k] = into.get(k, 0) + float(st.get(k) or 0)
            for stage, t in totals.items():
                per = (t["forward"] + t["backward"]) / t["attacked"] if t.get("attacked") else 0
                rows.append([Cell(run.name), Cell(rec.label), Cell(stage)] + [
                    Cell(f"{t.get(k, 0):.0f}", "num")
                    for k in ("attacked", "fooled", "forward", "backward")
                ] + [Cell(f"{per:.0f}", "num")])  # fmt: skip
    return Table(head, rows)


def all_curves_table(rows: Sequence[Row]) -> Table:
    """Every attack record, one line each, as in summary.md."""

    def kind(key: str) -> str:
        return "num" if key in NUMERIC else "wrap" if key in ("curve", "flags") else ""

    return Table(
        [Head(title) for _, title in MD_COLUMNS],
        [[Cell(cell_text(row, k), kind(k)) for k, _ in MD_COLUMNS] for row in rows],
    )


def half_width(n: int) -> float:
    """About how far a 95% interval reaches around an accuracy near 50% with ``n`` samples."""
    return 1.96 * math.sqrt(0.25 / max(n, 1))


def findings(name: str, groups: Sequence[Group], chosen: dict[str, EpsChoice]) -> list[str]:
    """Sentences from the numbers: per headline cell, the most and least robust group
    and whether their difference is larger than the intervals (a finding) or not."""
    out = []
    for key in headline_cells(dataset_cells(groups)):
        if key.norm not in chosen:
            continue
        eps = chosen[key.norm].eps
        stats = [(g, cell_stat(g, key, eps)) for g in groups]
        ranked = sorted(((g, s) for g, s in stats if s is not None), key=lambda p: -p[1].mean)
        if len(ranked) < 2:
            continue
        (best, b), (worst, w) = ranked[0], ranked[-1]
        head = (f"{name}, {key.title} at ε* = {eps_text(eps)}: {best.label} keeps "
                f"{fmt(b.mean, 3)}, {worst.label} {fmt(w.mean, 3)}")  # fmt: skip
        if b.band[0] > w.band[1]:
            out.append(f"{head}; the intervals do not overlap, so this difference is a finding.")
        else:
            out.append(f"{head}; the intervals overlap ({fmt(b.band[0], 3)}–{fmt(b.band[1], 3)} "
                       f"vs {fmt(w.band[0], 3)}–{fmt(w.band[1], 3)}), so these samples cannot "
                       "tell them apart: not a finding.")  # fmt: skip
    return out


def sample_sentence(report_runs: Sequence[ReportRun]) -> str:
    """``With 360 samples an interval is about ±5.2 points ...``."""
    ns = sorted({c.n for run in report_runs for c in run_cells(run).values() if c.n})
    if not ns:
        return ""
    parts = [f"{plural(n, 'sample')} about ±{100 * half_width(n):.1f} points" for n in ns]
    return (
        "Every accuracy rests on a finite number of samples, so it carries a 95% interval "
        f"(Wilson): with {'; with '.join(parts)} (widest near 50%). A difference smaller "
        "than the intervals is not reported as a finding."
    )


def _auc(c: Combined) -> float | None:
    """Area under the worst-case curve over [0, largest eps] / that eps."""
    xs = sorted({0.0, *c.grid})
    if xs[-1] <= 0:
        return None
    ys = [c.clean_accuracy if x == 0 else c.accuracy_at(x) for x in xs]
    area = sum(
        (x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False)
    )
    return area / xs[-1]


def headline(
    report_runs: Sequence[ReportRun], chosen: dict[str, dict[str, EpsChoice]]
) -> list[dict[str, Any]]:
    """Per run: test accuracy and, per norm, the worst case over its untargeted
    test-split attacks at ε* (JSON-ready; ``build_report`` returns it as ``"table"``)."""
    table = []
    for run in report_runs:
        robust = {}
        for norm, choice in chosen.get(run.dataset, {}).items():
            c = run_cells(run).get(CellKey(norm, None, "test"))
            if c is None or not c.covers(choice.eps):
                continue
            robust[norm] = {"eps": choice.eps, "accuracy": c.accuracy_at(choice.eps),
                            "interval": list(c.interval_at(choice.eps)), "n": c.n,
                            "bound": c.bound_at(choice.eps), "attack": c.names,
                            "auc": _auc(c)}  # fmt: skip
        table.append({"run": run.name, "model": run.model, "optimizer": run.optimizer,
                      "dataset": run.dataset, "seed": run.seed,
                      "test_accuracy": run.test_accuracy, "seconds": run.train_seconds,
                      "epochs": run.metric_rows, "robust": robust})  # fmt: skip
    return table
