"""The report's HTML page: ``templates/index.html.j2`` rendered with Jinja2.

Autoescaping is on, so run names, paths, notes and captions can hold any
characters (``<script>`` included) and come out as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2

from .. import __version__
from .groups import Group
from .load import ReportRun
from .numbers import EpsChoice
from .plan import SECTIONS, Task
from .results import (
    Table,
    combined_table,
    findings,
    results_table,
    sample_sentence,
    stage_table,
    warnings_list,
)
from .sections import extra_sections
from .style import eps_text, model_color, norm_name, safe
from .views import wrong_share

TEMPLATE = "index.html.j2"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("advkit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _figure(task: Task) -> dict[str, str]:
    return {"src": f"figures/{task.file}", "caption": task.caption}


def _gallery_words(groups: Sequence[Group], chosen: dict[str, EpsChoice], tasks) -> list[str]:
    """What the galleries show, in words: their ε against ε*, fooled and not."""
    words = []
    runs = {r.name: r for g in groups for r in g.runs}
    for t in tasks:
        run = runs.get(t.run or "")
        rec = (
            next((r for r in run.records if t.file.endswith(f"{safe(r.name)}.png")), None)
            if run
            else None
        )
        if rec is None or rec.examples is None:
            continue
        choice = chosen.get(rec.setting.norm)
        eps = rec.examples_eps
        wrong = int((rec.examples["pred_adv"] != rec.examples["y"]).sum())
        n = len(rec.examples["y"])
        line = (
            f"{t.caption}: {n} stored examples at ε = {eps_text(eps) if eps is not None else '?'}"
        )
        line += f", {wrong} misclassified under attack and {n - wrong} not"
        if choice is not None and eps is not None and abs(eps - choice.eps) > 1e-12:
            line += (f". Not the table's ε* = {eps_text(choice.eps)}: the gallery file holds "
                     "examples at one budget only, the smallest that fooled at least half of "
                     "the samples when the attack ran")  # fmt: skip
        if rec.setting.norm == "linf" and eps is not None:
            line += f". Each pixel may move by up to {eps:.0%} of its range"
        words.append(line + ".")
    return words


def _dataset(name: str, groups: Sequence[Group], chosen: dict[str, EpsChoice],
             tasks: Sequence[Task]) -> dict[str, Any]:  # fmt: skip
    runs = [r for g in groups for r in g.runs]
    mine = [t for t in tasks if t.dataset == name]
    galleries = [t for t in mine if t.section == "gallery"]
    return {
        "name": name,
        "id": "d-" + safe(name),
        "groups": len(groups),
        "runs": len(runs),
        "chosen": [
            {"norm": norm_name(c.norm), "eps": eps_text(c.eps), "how": c.how}
            for c in chosen.values()
        ],  # fmt: skip
        "results": results_table(groups, chosen),
        "combined": combined_table(runs),
        "stages": stage_table(runs),
        "warnings": warnings_list(runs),
        "findings": findings(name, groups, chosen),
        "sections": {s: [_figure(t) for t in mine if t.section == s] for s in SECTIONS},
        "gallery_words": _gallery_words(groups, chosen, galleries),
        "share": _shares(runs),
        **extra_sections(groups, chosen),
    }


def _shares(runs: Sequence[ReportRun]) -> str:
    from .combine import CellKey

    got = wrong_share(runs, CellKey("linf", None)) or wrong_share(runs, CellKey("l2", None))
    return "" if got is None else f"{got[0]} of {got[1]}"


def render_page(
    report_runs: Sequence[ReportRun],
    datasets: dict[str, list[Group]],
    chosen: dict[str, dict[str, EpsChoice]],
    tasks: Sequence[Task],
    all_curves: Table,
    notes: Sequence[str],
) -> str:
    """The text of ``index.html``: one section per dataset, then every record."""
    return _ENV.get_template(TEMPLATE).render(
        n_runs=len(report_runs),
        n_groups=sum(len(g) for g in datasets.values()),
        n_records=len(all_curves.rows),
        datasets=[_dataset(n, gs, chosen.get(n, {}), tasks) for n, gs in datasets.items()],
        samples=sample_sentence(report_runs),
        all_curves=all_curves,
        notes=notes,
        model_swatches=[
            {"name": m, "color": model_color(m)} for m in sorted({r.model for r in report_runs})
        ],
        version=__version__,
        run_paths=[str(r.path) for r in report_runs],
    )
