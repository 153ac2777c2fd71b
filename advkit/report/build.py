"""``build_report``: load the runs, choose the budgets, plan the figures, write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import matplotlib

from .. import runs
from .canvas import save_figure
from .groups import by_dataset, group_runs
from .load import ReportRun, find_runs, is_number, is_run, load_report_run
from .numbers import EpsChoice, choose_eps
from .page import render_page
from .plan import Task, plan, unique_names
from .results import all_curves_table, headline
from .style import RC, eps_text, norm_name
from .tables import Row, csv_text, md_text, summary_rows

Progress = Callable[[int, int, str], None]


def _check_arguments(run_dirs: Sequence[Any], given: dict[str, Any]) -> None:
    for norm, value in given.items():
        if value is not None and not (is_number(value) and value > 0):
            raise ValueError(f"eps_{norm} must be a finite number > 0, got {value!r}")
    if not run_dirs:
        raise ValueError("no run directories given")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    if is_run(out):
        raise ValueError(f"--out {str(out)!r} is a run directory; write the report elsewhere")


def _notes(
    report_runs: Sequence[ReportRun],
    rows: Sequence[Row],
    chosen: dict[str, dict[str, EpsChoice]],
    given: dict[str, float | None],
) -> list[str]:
    """Per-run notes, ignored budgets, and budgets beyond some records' grids."""
    notes = [f"{run.name}: {note}" for run in report_runs for note in run.notes]
    norms = {norm for per in chosen.values() for norm in per}
    for norm, value in given.items():
        if value is not None and norm not in norms:
            notes.append(
                f"--eps-{norm} {eps_text(value)} ignored: no run has an {norm_name(norm)} attack"
            )
    for dataset, per in chosen.items():
        notes += _beyond(dataset, per, rows)
    return notes


def _beyond(dataset: str, per: dict[str, EpsChoice], rows: Sequence[Row]) -> list[str]:
    notes = []
    for choice in per.values():
        beyond = [
            r
            for r in rows
            if r.dataset == dataset and r.norm == choice.norm and r.accuracy_at_eps_chosen is None
        ]
        if beyond:
            notes.append(
                f"{dataset}: ε* = {eps_text(choice.eps)} ({norm_name(choice.norm)}) lies beyond "
                f"the largest budget of {len(beyond)} attack records: shown as — (never extrapolated)"
            )
    return notes


def _flat_eps(chosen: dict[str, dict[str, EpsChoice]]) -> dict[str, float]:
    """Per norm, the budget when every dataset has the same one (else left out)."""
    flat: dict[str, set[float]] = {}
    for per in chosen.values():
        for norm, c in per.items():
            flat.setdefault(norm, set()).add(c.eps)
    return {norm: next(iter(v)) for norm, v in flat.items() if len(v) == 1}


def _write_figures(
    tasks: Sequence[Task], figures_dir: Path, progress: Progress | None
) -> tuple[list[Path], list[Task]]:
    """Draw and write each figure; a task with nothing to draw (None) is dropped."""
    written: list[Path] = []
    drawn: list[Task] = []
    if progress is not None:
        progress(0, len(tasks), "")
    for i, task in enumerate(tasks, 1):
        with matplotlib.rc_context(cast(Any, RC)):
            fig = task.build()
            if fig is not None:
                written.append(save_figure(fig, figures_dir / task.file))
                drawn.append(task)
        if progress is not None:
            progress(i, len(tasks), task.file)
    return written, drawn


def _remove_stale(figures_dir: Path, written: Sequence[Path]) -> None:
    keep = {p.name for p in written}
    for stale in figures_dir.glob("*.png") if figures_dir.is_dir() else []:
        if stale.name not in keep:
            stale.unlink(missing_ok=True)


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    eps_linf: float | None = None,
    eps_l2: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write a report on ``run_dirs`` into ``out``: figures, index.html, summary.csv/md.

    Everything is read and checked before anything is written, and every file
    is written atomically, so a bad input writes nothing and an interruption
    leaves only complete files. PNGs in ``out/figures`` that this report did not
    write (left by an older report) are removed at the end.

    Args:
        run_dirs: run directories, or directories holding runs.
        out: the report directory (created if needed).
        eps_linf: the L∞ budget at which robust accuracies are compared;
            None picks the middle of the budgets all runs share.
        eps_l2: the same for L2.
        progress: called as ``progress(done, total, file)`` before the first
            and after each figure.

    Returns:
        ``{"out", "index", "csv", "markdown", "figures", "runs", "records",
        "eps", "notes", "table"}``: paths written, counts, the chosen budgets,
        per-run notes and per-run headline numbers (``table``).

    Raises:
        ValueError: no runs, a bad eps, an ``out`` that is a file or a run;
            RunError (a ValueError) for a path that is not a run or a corrupt
            file, naming it.
    """
    out, given = Path(out), {"linf": eps_linf, "l2": eps_l2}
    _check_arguments(run_dirs, given)
    # Load: everything read and checked before anything is written.
    report_runs = [load_report_run(p) for p in find_runs(run_dirs)]
    _check_out(out)
    unique_names(report_runs)
    # Group: seeds together, datasets apart; choose each dataset's budgets.
    datasets = by_dataset(group_runs(report_runs))
    chosen = {
        name: choose_eps([r for g in groups for r in g.runs], given)
        for name, groups in datasets.items()
    }
    rows = summary_rows(report_runs, chosen)
    notes = _notes(report_runs, rows, chosen, given)
    table = headline(report_runs, chosen)
    # Plan, then write.
    written, drawn = _write_figures(plan(datasets, chosen), out / "figures", progress)
    runs.write_text(out / "summary.csv", csv_text(rows))
    runs.write_text(out / "summary.md", md_text(report_runs, rows, chosen, notes))
    page = render_page(report_runs, datasets, chosen, drawn, all_curves_table(rows), notes)
    runs.write_text(out / "index.html", page)
    _remove_stale(out / "figures", written)
    return {
        "out": out,
        "index": out / "index.html",
        "csv": out / "summary.csv",
        "markdown": out / "summary.md",
        "figures": written,
        "runs": len(report_runs),
        "records": len(rows),
        "eps": _flat_eps(chosen),
        "eps_by_dataset": {d: {n: c.eps for n, c in per.items()} for d, per in chosen.items()},
        "notes": notes,
        "table": table,
    }
