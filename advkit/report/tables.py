"""The report's tables: ``summary.csv`` (the JSON numbers verbatim),
``summary.md`` (fixed decimals), the per-run headline numbers and the two HTML
tables, as data the page template lays out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..trust import wilson
from .load import ReportRun, Setting
from .numbers import EpsChoice, area_under_curve, value_at
from .style import DECIMALS, eps_text, fmt, norm_name, seconds_text, target_slug

CSV_COLUMNS = (
    "run",
    "model",
    "optimizer",
    "dataset",
    "test_accuracy",
    "attack",
    "norm",
    "target",
    "loss",
    "split",
    "steps",
    "restarts",
    "n_samples",
    "clean_accuracy",
    "epsilons",
    "accuracy",
    "success_rate",
    "eps_chosen",
    "accuracy_at_eps_chosen",
    "bound",
    "auc",
    "seconds",
    "cost",
    "flags",
    "record",
)
"""Columns of summary.csv; list-valued cells are ``;``-joined, numbers verbatim."""


@dataclass
class Row:
    """One run x attack record, raw values (formatting happens per output)."""

    run: str
    model: str
    optimizer: str
    dataset: str
    test_accuracy: float | None
    attack: str
    norm: str
    target: str
    loss: str
    split: str
    steps: int | None
    restarts: int | None
    n_samples: int | None
    clean_accuracy: float
    epsilons: list[float]
    accuracy: list[float]
    success_rate: list[float]
    eps_chosen: float | None
    accuracy_at_eps_chosen: float | None
    bound: str  # "yes": eps_chosen lies between two budgets (an upper bound); else "no"
    auc: float | None
    seconds: float | None
    record: Path
    setting: Setting
    label: str = ""
    flags: str = ""
    cost: float | None = None


def summary_rows(
    report_runs: Sequence[ReportRun], chosen: dict[str, dict[str, EpsChoice]]
) -> list[Row]:
    """One row per run x attack record, in setting order within each run; ε* is the
    run's dataset's."""
    rows = []
    for run in report_runs:
        for rec in sorted(run.records, key=lambda r: (r.setting.sort_key(), r.name)):
            s, c = rec.setting, rec.curve
            choice = chosen.get(run.dataset, {}).get(s.norm)
            value, bound = value_at(c, choice.eps) if choice else (None, False)
            rows.append(
                Row(
                    run=run.name,
                    model=run.model,
                    optimizer=run.optimizer,
                    dataset=run.dataset,
                    test_accuracy=run.test_accuracy,
                    attack=s.attack,
                    norm=s.norm,
                    target=target_slug(s.target).removeprefix("target-"),
                    loss=s.loss,
                    split=s.split,
                    steps=rec.steps,
                    restarts=rec.restarts,
                    n_samples=c.n_samples,
                    clean_accuracy=c.clean_accuracy,
                    epsilons=c.epsilons,
                    accuracy=c.accuracy,
                    success_rate=c.success_rate,
                    eps_chosen=choice.eps if choice else None,
                    accuracy_at_eps_chosen=value,
                    bound="yes" if bound else "no",
                    auc=area_under_curve(c),
                    seconds=c.seconds,
                    record=rec.path,
                    setting=s,
                    label=rec.short,
                    flags="; ".join(f["message"] for f in c.flags),
                    cost=c.cost,
                )
            )
    return rows


def _exact(value: Any) -> str:
    """A JSON value as text that parses back to the same value (repr of floats)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ";".join(_exact(v) for v in value)
    return str(value)


def csv_text(rows: Sequence[Row]) -> str:
    """``summary.csv``: a header and one line per row, numbers verbatim."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_exact(getattr(row, k)) for k in CSV_COLUMNS])
    return buf.getvalue()


MD_COLUMNS = (
    ("run", "run"),
    ("model", "model"),
    ("optimizer", "optimizer"),
    ("dataset", "dataset"),
    ("attack", "attack"),
    ("norm", "norm"),
    ("target", "target"),
    ("loss", "loss"),
    ("split", "split"),
    ("label", "attack settings"),
    ("n_samples", "samples"),
    ("clean_accuracy", "clean acc"),
    ("accuracy_at_eps_chosen", "acc at ε* [95% interval]"),
    ("auc", "AUC"),
    ("seconds", "attack time"),
    ("cost", "passes / sample"),
    ("curve", "accuracy per ε"),
    ("flags", "warnings"),
)
"""(key, title) of the human-readable tables: summary.md and the page's all-curves table."""

NUMERIC = frozenset(
    ("clean_accuracy", "accuracy_at_eps_chosen", "auc", "seconds", "steps", "n_samples", "cost")
)
"""Columns aligned right."""


def cell_text(row: Row, key: str) -> str:
    """A table cell for humans: fixed decimals, ``≤`` for an upper bound."""
    if key == "accuracy_at_eps_chosen":
        if row.eps_chosen is None:
            return "—"
        mark = "≤" if row.bound == "yes" else ""
        value = row.accuracy_at_eps_chosen
        if value is None:
            return f"— (ε={eps_text(row.eps_chosen)})"
        n = row.n_samples or 0
        lo, hi = wilson(round(value * n), n)
        return f"{mark}{fmt(value)} [{fmt(lo, 3)}, {fmt(hi, 3)}] (ε={eps_text(row.eps_chosen)})"
    if key in ("clean_accuracy", "auc", "test_accuracy"):
        return fmt(getattr(row, key))
    if key == "seconds":
        return seconds_text(row.seconds)
    if key == "cost":
        return "—" if row.cost is None else f"{row.cost:.0f}"
    if key == "n_samples":
        return "—" if row.n_samples is None else str(row.n_samples)
    if key == "flags":
        return row.flags or "—"
    if key == "curve":
        return ", ".join(
            f"{eps_text(e)}: {fmt(a)}" for e, a in zip(row.epsilons, row.accuracy, strict=True)
        )
    if key == "steps":
        return "—" if row.steps is None else str(row.steps)
    return str(getattr(row, key))


def _md_budgets(chosen: dict[str, dict[str, EpsChoice]]) -> list[str]:
    return [
        f"- {dataset}: ε* ({norm_name(c.norm)}) = {eps_text(c.eps)}, {c.how}"
        for dataset, per_norm in chosen.items()
        for c in per_norm.values()
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_text(
    report_runs: Sequence[ReportRun],
    rows: Sequence[Row],
    chosen: dict[str, dict[str, EpsChoice]],
    notes: Sequence[str],
) -> str:
    """``summary.md``: how to read it, the chosen budgets, the table and the notes."""
    lines = [
        "# advkit report",
        "",
        f"{len(report_runs)} runs, {len(rows)} attack records. "
        f"Accuracies with {DECIMALS} decimals, exactly as in the runs' JSON files; "
        "AUC is the area under accuracy vs ε over [0, largest ε] divided by that ε; "
        "≤ marks a budget between two measured ones: the accuracy measured at the largest "
        "budget below it, an upper bound (a sample fooled there is fooled at any larger one).",
        "",
    ]
    lines += _md_budgets(chosen)
    lines.append("")
    lines.append("| " + " | ".join(title for _, title in MD_COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if k in NUMERIC else "---" for k, _ in MD_COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(cell_text(row, k)) for k, _ in MD_COLUMNS) + " |")
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
