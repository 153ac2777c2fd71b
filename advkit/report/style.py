"""The report's visual vocabulary: one colour per model, one line style per
optimizer, the names shown for norms, targets and classes, and number formats.

Every figure and table takes its look from here, so a model has the same colour
and an optimizer the same line style everywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

MODEL_COLORS: dict[str, str] = {
    "mlp": "#1f77b4",  # blue
    "bncnn": "#d62728",  # red
    "attention": "#2ca02c",  # green
}
"""Colour of each course model, the same in every figure."""

OPTIMIZER_STYLES: dict[str, dict[str, Any]] = {
    "sgd": {"linestyle": (0, (1, 1.5)), "marker": "v"},  # dotted
    "momentum": {"linestyle": (0, (7, 2, 1.5, 2)), "marker": "^"},  # dash-dot
    "adagrad": {"linestyle": (0, (4, 2)), "marker": "P"},  # dashed
    "rmsprop": {"linestyle": (0, (7, 1.5, 1.5, 1.5, 1.5, 1.5)), "marker": "D"},  # dash-dot-dot
    "adam": {"linestyle": "-", "marker": "o"},  # solid
    "adamw": {"linestyle": (0, (12, 3)), "marker": "s"},  # long dashes
}
"""Line style and marker of each optimizer, the same in every figure: no two alike."""

# Names outside the mappings get one of these, picked by a hash of the name
# (not Python's salted hash) so a name keeps its look from one report to the next.
_FALLBACK_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_FALLBACK_STYLES = (
    {"linestyle": (0, (3, 1, 1, 1)), "marker": "X"},
    {"linestyle": (0, (8, 3)), "marker": "*"},
    {"linestyle": (0, (3, 3)), "marker": "h"},
    {"linestyle": (0, (1, 3)), "marker": "<"},
    {"linestyle": (0, (6, 2, 2, 2)), "marker": ">"},
)

MODEL_ORDER = ("mlp", "bncnn", "attention")
OPTIMIZER_ORDER = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")

NORM_NAMES = {"linf": "L∞", "l2": "L2"}
NORM_ORDER = ("linf", "l2")
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "fashion-mnist": (
        "T-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "boot",
    ),
}

DPI = 130

RC: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 11.5,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 12.5,
}
"""Font sizes for figures shown at 600-1,000 px wide (about 7.5 in at ``DPI``): text
stays >= 9 px on a page 800 px wide."""

FIG_WIDTH = 7.6
"""Width in inches of the report's figures (one column of the page)."""
DECIMALS = 4
"""Decimals of every accuracy, success rate and AUC shown in tables and figures."""

ACCURACY_COLOR = "#222222"
SUCCESS_COLOR = "#e6550d"
RIGHT_COLOR = "#1a7f37"
WRONG_COLOR = "#c00000"
MARK_COLOR = "#888888"  # the chosen budget's vertical line


def _stable_index(name: str, n: int) -> int:
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % n


def model_color(name: str) -> str:
    """The colour of model ``name`` in every figure (a fixed fallback for unknown names)."""
    return MODEL_COLORS.get(name) or _FALLBACK_COLORS[_stable_index(name, len(_FALLBACK_COLORS))]


def optimizer_style(name: str) -> dict[str, Any]:
    """``{"linestyle", "marker"}`` of optimizer ``name`` in every figure (fallback for unknown names)."""
    style = (
        OPTIMIZER_STYLES.get(name) or _FALLBACK_STYLES[_stable_index(name, len(_FALLBACK_STYLES))]
    )
    return dict(style)


def plural(n: int, word: str) -> str:
    """``1 sample``, ``3 samples``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def seconds_text(value: float | None) -> str:
    """A duration: ``—``, ``< 0.1 s``, ``2.3 s``."""
    if value is None:
        return "—"
    return "< 0.1 s" if value < 0.05 else f"{value:.1f} s"


def fmt(value: float | None, decimals: int = DECIMALS) -> str:
    """A number with a fixed number of decimals; ``—`` for a missing one."""
    return "—" if value is None else f"{value:.{decimals}f}"


def eps_text(value: float) -> str:
    """A budget as written in titles and tables: shortest form (``0.1``, ``0.0627451``)."""
    return f"{value:g}"


def norm_name(norm: str) -> str:
    """``L∞``, ``L2``, or the norm's own name."""
    return NORM_NAMES.get(norm, norm)


def eps_axis_label(norm: str) -> str:
    """The x-axis label of a robustness curve: the norm and the pixel units."""
    return f"ε ({norm_name(norm)} norm, pixel units in [0, 1])"


def attack_title(attack: str) -> str:
    """The attack's name as shown: upper case (``pgd`` -> ``PGD``)."""
    return attack.upper()


def target_slug(target: Any) -> str:
    """File-name part of a target mode: ``untargeted``, ``target-random``, ``target-3``."""
    return "untargeted" if target is None else f"target-{target}"


def target_label(target: Any) -> str:
    """Human name of a target mode: ``untargeted``, ``targeted (class 3)``."""
    if target is None:
        return "untargeted"
    if isinstance(target, int):
        return f"targeted (class {target})"
    return f"targeted ({target})"


def rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    """Sort key: the names in ``order`` first, in that order, then the rest by name."""
    return (order.index(name) if name in order else len(order), name)


def ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    """``names`` without repeats, sorted by :func:`rank`."""
    return sorted(set(names), key=lambda n: rank(n, order))


def safe(name: str) -> str:
    """``name`` reduced to a safe file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
