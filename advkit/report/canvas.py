"""Figures without pyplot: an Agg canvas per figure (no global state, no display)
and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import runs
from .style import DPI


def new_figure(width: float, height: float, layout: Any = "constrained") -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temporary file, then rename).

    Args:
        fig: the figure.
        path: where to write; the ``.png`` suffix is kept by the caller.
        dpi: resolution stored in the PNG (>= 120 keeps labels readable).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return path
