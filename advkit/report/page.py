"""The report's HTML page: ``templates/index.html.j2`` rendered with Jinja2.

Autoescaping is on, so run names, paths, notes and captions can hold any
characters (``<script>`` included) and come out as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2

from .. import __version__
from .load import ReportRun
from .numbers import EpsChoice
from .plan import SECTIONS, Task
from .style import DECIMALS, MODEL_ORDER, OPTIMIZER_ORDER, eps_text, model_color, norm_name, ordered
from .tables import Row, Table

TEMPLATE = "index.html.j2"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("advkit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _figure(task: Task) -> dict[str, str]:
    return {"src": f"figures/{task.file}", "caption": task.caption}


def _galleries(report_runs: Sequence[ReportRun], tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """Per run with galleries: its label and figures; the first run's open."""
    galleries = []
    for i, run in enumerate(report_runs):
        mine = [_figure(t) for t in tasks if t.section == "gallery" and t.run == run.name]
        if mine:
            galleries.append({"label": run.label, "figures": mine, "open": i == 0})
    return galleries


def render_page(
    report_runs: Sequence[ReportRun],
    rows: Sequence[Row],
    chosen: dict[str, EpsChoice],
    tasks: Sequence[Task],
    tables: dict[str, Table],
    notes: Sequence[str],
) -> str:
    """The text of ``index.html``.

    Args:
        report_runs: the runs, in report order.
        rows: one per run x attack record.
        chosen: the comparison budget of each norm.
        tasks: the figures, in page order.
        tables: ``{"results": ..., "all_curves": ...}``.
        notes: the notes shown under the results table.
    """
    models = ordered((r.model for r in report_runs), MODEL_ORDER)
    return _ENV.get_template(TEMPLATE).render(
        runs=report_runs,
        models=models,
        optimizers=ordered((r.optimizer for r in report_runs), OPTIMIZER_ORDER),
        datasets=sorted({r.dataset for r in report_runs}),
        n_records=len(rows),
        decimals=DECIMALS,
        chosen=[
            {"norm": norm_name(c.norm), "eps": eps_text(c.eps), "how": c.how}
            for c in chosen.values()
        ],
        results=tables["results"],
        all_curves=tables["all_curves"],
        notes=notes,
        sections={s: [_figure(t) for t in tasks if t.section == s] for s in SECTIONS},
        model_swatches=[{"name": m, "color": model_color(m)} for m in models],
        galleries=_galleries(report_runs, tasks),
        version=__version__,
        run_paths=[str(r.path) for r in report_runs],
    )
