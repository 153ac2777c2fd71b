"""Reports: robustness curves, model x optimizer comparisons, training curves and
adversarial-example galleries, as PNG figures and one offline HTML page.

::

    report/
      index.html      every figure, a results table and short explanations
      summary.csv     one row per run x attack setting, the JSON numbers verbatim
      summary.md      the same table for humans (fixed decimals)
      figures/*.png   curves-*.png, comparison.png, training-*.png, gallery-*.png

Every number in the tables and figure cells is a number from the run's JSON
files, formatted with a fixed number of decimals; the only derived numbers are
the area under each curve; where a run's grid lacks the chosen budget, the
accuracy at the largest budget below it stands as an upper bound (marked ``≤``).

Modules, one job each: ``load`` (runs and records as typed objects; the only
reader of raw JSON), ``numbers`` (value at a budget, AUC, budget choice,
strongest attack), ``style`` (colours, line styles, labels, formats),
``figures`` and ``gallery`` (matplotlib), ``tables`` (CSV, Markdown, table
data), ``page`` (the Jinja2 template), ``plan`` (which figures) and ``build``
(``build_report``).
"""

from .build import build_report
from .canvas import new_figure, save_figure
from .figures import attack_figure, comparison_figure, robustness_figure, training_figure
from .gallery import gallery_figure
from .load import AttackRecord, Curve, ReportRun, Setting, find_runs, load_report_run
from .numbers import EpsChoice, area_under_curve, choose_eps, strongest_record, value_at
from .style import (
    MODEL_COLORS,
    NORM_NAMES,
    OPTIMIZER_STYLES,
    eps_axis_label,
    fmt,
    model_color,
    optimizer_style,
)
from .tables import CSV_COLUMNS

__all__ = [
    "CSV_COLUMNS",
    "MODEL_COLORS",
    "NORM_NAMES",
    "OPTIMIZER_STYLES",
    "AttackRecord",
    "Curve",
    "EpsChoice",
    "ReportRun",
    "Setting",
    "area_under_curve",
    "attack_figure",
    "build_report",
    "choose_eps",
    "comparison_figure",
    "eps_axis_label",
    "find_runs",
    "fmt",
    "gallery_figure",
    "load_report_run",
    "model_color",
    "new_figure",
    "optimizer_style",
    "robustness_figure",
    "save_figure",
    "strongest_record",
    "training_figure",
    "value_at",
]
