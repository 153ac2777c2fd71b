"""What a report draws: one task per figure file, in page order, one set per dataset.

Runs on different datasets never share a figure; runs that differ only by seed
are one group (one line, one heatmap cell).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from matplotlib.figure import Figure

from .combine import CellKey, run_cells
from .defense import defense_figure, defense_pairs
from .figures import comparison_figure, robustness_figure, training_figure
from .gallery import gallery_figure, gallery_records, gallery_run
from .groups import Group
from .load import ReportRun
from .numbers import EpsChoice
from .style import MODEL_ORDER, ordered, safe
from .trained import has_adversarial, side_by_side_figure, tradeoff_figure
from .transfers import dataset_transfers, transfer_figure
from .views import (
    breaking_figure,
    confidence_figure,
    confusion_figure,
    gaps_figure,
    per_class_figure,
)

SECTIONS = (
    "comparison",
    "curves",
    "adversarial",
    "gaps",
    "per-class",
    "breaking",
    "confusion",
    "confidence",
    "training",
    "defenses",
    "transfer",
    "gallery",
)
"""Figure sections of each dataset, in page order."""


@dataclass
class Task:
    """One figure of the report: its file, dataset, section, caption and how to draw it."""

    file: str
    section: str  # one of SECTIONS
    caption: str
    build: Callable[[], Figure | None]
    run: str | None = None  # the run a gallery shows
    dataset: str = ""


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


def dataset_cells(groups: Sequence[Group]) -> list[CellKey]:
    """Every cell (norm, target, split) measured on any run of ``groups``."""
    found = {key for g in groups for run in g.runs for key in run_cells(run)}
    return sorted(found, key=CellKey.sort_key)


def headline_cells(cells: Sequence[CellKey]) -> list[CellKey]:
    """Per norm, the untargeted test cell, else the first cell of that norm."""
    out: dict[str, CellKey] = {}
    for key in cells:
        best = out.get(key.norm)
        if best is None or (key.target is None and key.split == "test" and best.target is not None):
            out[key.norm] = key
    return list(out.values())


def _views(
    name: str, slug: str, groups: Sequence[Group], chosen: dict[str, EpsChoice]
) -> list[Task]:
    cells = dataset_cells(groups)
    runs = [run for g in groups for run in g.runs]
    tasks = []
    for key in cells:
        choice = chosen.get(key.norm)
        if choice is None:
            continue
        f = f"{slug}-{key.slug}"
        tasks += [
            Task(f"comparison-{f}.png", "comparison", f"{name}: {key.title}",
                 partial(comparison_figure, name, key, groups, choice), dataset=name),
            Task(f"curves-{f}.png", "curves", f"{name}: {key.title}",
                 partial(robustness_figure, name, key, groups, choice), dataset=name),
            Task(f"gaps-{f}.png", "gaps", f"{name}: {key.title}",
                 partial(gaps_figure, name, key, runs, choice), dataset=name),
        ]  # fmt: skip
    for key in headline_cells(cells):
        f, choice = f"{slug}-{key.slug}", chosen[key.norm]
        tasks += [
            Task(f"per-class-{f}.png", "per-class", f"{name}: {key.title}",
                 partial(per_class_figure, name, key, groups, choice), dataset=name),
            Task(f"breaking-{f}.png", "breaking", f"{name}: {key.title}",
                 partial(breaking_figure, name, key, groups), dataset=name),
            Task(f"confusion-{f}.png", "confusion", f"{name}: {key.title}",
                 partial(confusion_figure, name, key, runs), dataset=name),
            Task(f"confidence-{f}.png", "confidence", f"{name}: {key.title}",
                 partial(confidence_figure, name, key, runs), dataset=name),
        ]  # fmt: skip
    return tasks


def _training_and_gallery(
    name: str, slug: str, groups: Sequence[Group], chosen: dict[str, EpsChoice]
) -> list[Task]:
    tasks = []
    for model in ordered({g.model for g in groups}, MODEL_ORDER):
        mine = [g for g in groups if g.model == model]
        tasks.append(
            Task(f"training-{slug}-{safe(model)}.png", "training", f"{name}: training of {model}",
                 partial(training_figure, name, model, mine), dataset=name)
        )  # fmt: skip
        run = gallery_run([r for g in mine for r in g.runs])
        if run is None:
            continue
        tasks += [
            Task(f"gallery-{slug}-{safe(run.name)}-{safe(rec.name)}.png", "gallery",
                 f"{run.label}: {rec.setting.title}", partial(gallery_figure, run, rec),
                 run=run.name, dataset=name)
            for rec in gallery_records(run, chosen)
        ]  # fmt: skip
    return tasks


def _robust_training(
    name: str, slug: str, groups: Sequence[Group], chosen: dict[str, EpsChoice]
) -> list[Task]:
    """Standard vs adversarially trained per model, and the trade-off scatter."""
    if not has_adversarial(groups):
        return []
    tasks = []
    for key in headline_cells(dataset_cells(groups)):
        choice = chosen.get(key.norm)
        if choice is None:
            continue
        f = f"{slug}-{key.slug}"
        tasks.append(Task(f"tradeoff-{f}.png", "adversarial", f"{name}: clean vs robust, {key.title}",
                          partial(tradeoff_figure, name, key, groups, choice), dataset=name))  # fmt: skip
        for model in ordered({g.model for g in groups if g.adversarial}, MODEL_ORDER):
            tasks.append(Task(
                f"at-vs-standard-{f}-{safe(model)}.png", "adversarial",
                f"{name}: {model}, standard vs adversarial training, {key.title}",
                partial(side_by_side_figure, name, key, model, groups, choice), dataset=name,
            ))  # fmt: skip
    return tasks


def _defenses_and_transfer(
    name: str, slug: str, groups: Sequence[Group], chosen: dict[str, EpsChoice]
) -> list[Task]:
    runs = [r for g in groups for r in g.runs]
    tasks = [
        Task(f"defense-{slug}-{safe(p.run.name)}-{i}.png", "defenses", f"{name}: {p.title}",
             partial(defense_figure, p, chosen.get(p.norm)), dataset=name)
        for i, p in enumerate(defense_pairs(runs), 1)
    ]  # fmt: skip
    records = dataset_transfers(runs)
    if records:
        tasks.append(Task(f"transfer-{slug}.png", "transfer", f"{name}: transfer matrices",
                          partial(transfer_figure, name, records), dataset=name))  # fmt: skip
    return tasks


def plan(datasets: dict[str, list[Group]], chosen: dict[str, dict[str, EpsChoice]]) -> list[Task]:
    """The figures of a report, dataset by dataset, in page order."""
    tasks: list[Task] = []
    for name, groups in datasets.items():
        slug = safe(name)
        mine = _views(name, slug, groups, chosen.get(name, {}))
        mine += _training_and_gallery(name, slug, groups, chosen.get(name, {}))
        mine += _robust_training(name, slug, groups, chosen.get(name, {}))
        mine += _defenses_and_transfer(name, slug, groups, chosen.get(name, {}))
        order = {s: i for i, s in enumerate(SECTIONS)}
        tasks += sorted(mine, key=lambda t: order[t.section])
    return tasks
