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

from .load import ReportRun, Setting
from .numbers import EpsChoice, area_under_curve, strongest_record, value_at
from .style import DECIMALS, eps_text, fmt, model_color, norm_name, target_slug

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
    "interpolated",
    "auc",
    "seconds",
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
    interpolated: str  # "yes" or "no"
    auc: float | None
    seconds: float | None
    record: Path
    setting: Setting


def summary_rows(report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]) -> list[Row]:
    """One row per run x attack record, in setting order within each run."""
    rows = []
    for run in report_runs:
        for rec in sorted(run.records, key=lambda r: (r.setting.sort_key(), r.name)):
            s, c = rec.setting, rec.curve
            choice = chosen.get(s.norm)
            value, interp = value_at(c, choice.eps) if choice else (None, False)
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
                    interpolated="yes" if interp else "no",
                    auc=area_under_curve(c),
                    seconds=c.seconds,
                    record=rec.path,
                    setting=s,
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
    ("steps", "steps"),
    ("clean_accuracy", "clean acc"),
    ("accuracy_at_eps_chosen", "acc at ε*"),
    ("auc", "AUC"),
    ("seconds", "attack seconds"),
    ("curve", "accuracy per ε"),
)
"""(key, title) of the human-readable tables: summary.md and the page's all-curves table."""

NUMERIC = frozenset(("clean_accuracy", "accuracy_at_eps_chosen", "auc", "seconds", "steps"))
"""Columns aligned right."""


def cell_text(row: Row, key: str) -> str:
    """A table cell for humans: fixed decimals, ``≈`` for an interpolated value."""
    if key == "accuracy_at_eps_chosen":
        if row.eps_chosen is None:
            return "—"
        mark = "≈" if row.interpolated == "yes" else ""
        return f"{mark}{fmt(row.accuracy_at_eps_chosen)} (ε={eps_text(row.eps_chosen)})"
    if key in ("clean_accuracy", "auc", "test_accuracy"):
        return fmt(getattr(row, key))
    if key == "seconds":
        return fmt(row.seconds, 1)
    if key == "curve":
        return ", ".join(
            f"{eps_text(e)}: {fmt(a)}" for e, a in zip(row.epsilons, row.accuracy, strict=True)
        )
    if key == "steps":
        return "—" if row.steps is None else str(row.steps)
    return str(getattr(row, key))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_text(
    report_runs: Sequence[ReportRun],
    rows: Sequence[Row],
    chosen: dict[str, EpsChoice],
    notes: Sequence[str],
) -> str:
    """``summary.md``: how to read it, the chosen budgets, the table and the notes."""
    lines = [
        "# advkit report",
        "",
        f"{len(report_runs)} runs, {len(rows)} attack records. "
        f"Accuracies with {DECIMALS} decimals, exactly as in the runs' JSON files; "
        "AUC is the area under accuracy vs ε over [0, largest ε] divided by that ε; "
        "≈ marks a value interpolated linearly between the two nearest budgets.",
        "",
    ]
    lines += [f"- ε* ({norm_name(c.norm)}) = {eps_text(c.eps)}: {c.how}" for c in chosen.values()]
    lines.append("")
    lines.append("| " + " | ".join(title for _, title in MD_COLUMNS) + " |")
    lines.append("|" + "|".join("---:" if k in NUMERIC else "---" for k, _ in MD_COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(cell_text(row, k)) for k, _ in MD_COLUMNS) + " |")
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def headline(
    report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]
) -> list[dict[str, Any]]:
    """Per run: test accuracy and, per norm, the strongest untargeted attack's numbers.

    Plain JSON-ready dicts (``build_report`` returns them as ``"table"``).
    """
    table = []
    for run in report_runs:
        robust = {}
        for norm, choice in chosen.items():
            rec = strongest_record(run, norm, choice.eps)
            if rec is None:
                continue
            value, interp = value_at(rec.curve, choice.eps)
            robust[norm] = {
                "eps": choice.eps,
                "accuracy": value,
                "interpolated": interp,
                "auc": area_under_curve(rec.curve),
                "attack": rec.label,
            }
        table.append(
            {
                "run": run.name,
                "model": run.model,
                "optimizer": run.optimizer,
                "dataset": run.dataset,
                "test_accuracy": run.test_accuracy,
                "seconds": run.train_seconds,
                "epochs": run.metric_rows,
                "robust": robust,
            }
        )
    return table


# --- the page's tables, as data -------------------------------------------------


@dataclass
class Cell:
    """One HTML table cell: its text, its class (``num``, ``wrap``) and a colour swatch."""

    text: str
    kind: str = ""
    swatch: str | None = None


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


def _short_value(row: Row | None) -> str:
    if row is None or row.eps_chosen is None:
        return "—"
    return ("≈" if row.interpolated == "yes" else "") + fmt(row.accuracy_at_eps_chosen)


def _results_head(
    settings: list[Setting], norms: list[str], chosen: dict[str, EpsChoice]
) -> list[Head]:
    head = [Head(h) for h in ("run", "model", "optimizer", "dataset", "epochs", "test accuracy")]
    for s in settings:
        at = eps_text(chosen[s.norm].eps) if s.norm in chosen else "—"
        head.append(Head(s.title, f"acc at ε = {at}"))
    head += [Head(f"AUC {norm_name(n)}", "strongest untargeted") for n in norms]
    head.append(Head("training time"))
    return head


def results_table(
    table: Sequence[dict[str, Any]], rows: Sequence[Row], chosen: dict[str, EpsChoice]
) -> Table:
    """One line per run: test accuracy, accuracy at ε* per attack setting, AUC per norm."""
    settings = sorted({row.setting for row in rows}, key=Setting.sort_key)
    by_run_setting: dict[tuple[str, Setting], Row] = {}
    for row in rows:
        by_run_setting.setdefault((row.run, row.setting), row)  # first record of a setting
    norms = [n for n in chosen if any(n in t["robust"] for t in table)]
    body = []
    for t in table:
        cells = [
            Cell(t["run"]),
            Cell(t["model"], swatch=model_color(t["model"])),
            Cell(t["optimizer"]),
            Cell(t["dataset"]),
            Cell(str(t["epochs"]), "num"),
            Cell(fmt(t["test_accuracy"]), "num"),
        ]
        cells += [Cell(_short_value(by_run_setting.get((t["run"], s))), "num") for s in settings]
        for n in norms:
            r = t["robust"].get(n)
            cells.append(Cell(fmt(r["auc"]) if r else "—", "num"))
        secs = t["seconds"]
        cells.append(Cell("—" if secs is None else f"{secs:.1f} s", "num"))
        body.append(cells)
    return Table(_results_head(settings, norms, chosen), body)


def all_curves_table(rows: Sequence[Row]) -> Table:
    """Every attack record, one line each, as in summary.md."""

    def kind(key: str) -> str:
        return "num" if key in NUMERIC else "wrap" if key == "curve" else ""

    return Table(
        [Head(title) for _, title in MD_COLUMNS],
        [[Cell(cell_text(row, k), kind(k)) for k, _ in MD_COLUMNS] for row in rows],
    )
