"""What a report draws: one task per figure file, in page order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from matplotlib.figure import Figure

from .figures import comparison_figure, robustness_figure, training_figure
from .gallery import gallery_figure, gallery_records, gallery_run
from .load import AttackRecord, ReportRun, Setting
from .numbers import EpsChoice
from .style import MODEL_ORDER, OPTIMIZER_ORDER, ordered, rank, safe

SECTIONS = ("comparison", "curves", "training", "gallery")


@dataclass
class Task:
    """One figure of the report: its file, page section, caption and how to draw it."""

    file: str
    section: str  # one of SECTIONS
    caption: str
    build: Callable[[], Figure]
    run: str | None = None  # the run a gallery shows


def unique_names(report_runs: list[ReportRun]) -> None:
    """Give runs with the same directory name distinct names (parent-name, then -2, -3...)."""
    seen: dict[str, int] = {}
    for run in report_runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in report_runs:
        if seen[run.name] > 1:
            run.name = f"{run.path.parent.name}-{run.path.name}"
    taken: set[str] = set()
    for run in report_runs:
        base, k = run.name, 2
        while run.name in taken:
            run.name, k = f"{base}-{k}", k + 1
        taken.add(run.name)


def _curve_tasks(report_runs: list[ReportRun], chosen: dict[str, EpsChoice]) -> list[Task]:
    """One robustness figure per attack setting (split included), one line per run."""
    groups: dict[Setting, list[tuple[ReportRun, AttackRecord]]] = {}
    for run in report_runs:
        for rec in run.records:
            groups.setdefault(rec.setting, []).append((run, rec))
    return [
        Task(
            f"curves-{setting.slug}.png",
            "curves",
            setting.title,
            partial(robustness_figure, setting, groups[setting], chosen.get(setting.norm)),
        )
        for setting in sorted(groups, key=Setting.sort_key)
    ]


def _by_model(report_runs: list[ReportRun]) -> dict[str, list[ReportRun]]:
    by_model: dict[str, list[ReportRun]] = {}
    for run in report_runs:
        by_model.setdefault(run.model, []).append(run)
    return {model: by_model[model] for model in ordered(by_model, MODEL_ORDER)}


def _training_tasks(by_model: dict[str, list[ReportRun]]) -> list[Task]:
    tasks = []
    for model, model_runs in by_model.items():
        runs_in_order = sorted(
            model_runs, key=lambda r: (rank(r.optimizer, OPTIMIZER_ORDER), r.name)
        )
        tasks.append(
            Task(
                f"training-{safe(model)}.png",
                "training",
                f"Training of {model}",
                partial(training_figure, model, runs_in_order),
            )
        )
    return tasks


def _gallery_tasks(
    by_model: dict[str, list[ReportRun]], chosen: dict[str, EpsChoice]
) -> list[Task]:
    tasks = []
    for model_runs in by_model.values():
        run = gallery_run(model_runs)
        if run is None:
            continue
        tasks += [
            Task(
                f"gallery-{safe(run.name)}-{safe(rec.name)}.png",
                "gallery",
                rec.setting.title,
                partial(gallery_figure, run, rec),
                run=run.name,
            )
            for rec in gallery_records(run, chosen)
        ]
    return tasks


def plan(report_runs: list[ReportRun], chosen: dict[str, EpsChoice]) -> list[Task]:
    """The figures of a report on ``report_runs``, in page order."""
    tasks: list[Task] = []
    if chosen and any(r.records for r in report_runs):
        tasks.append(
            Task(
                "comparison.png",
                "comparison",
                "Robust accuracy at ε* and area under the curve, models × optimizers.",
                partial(comparison_figure, report_runs, chosen),
            )
        )
    tasks += _curve_tasks(report_runs, chosen)
    by_model = _by_model(report_runs)
    return tasks + _training_tasks(by_model) + _gallery_tasks(by_model, chosen)
