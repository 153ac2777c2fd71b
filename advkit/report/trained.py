"""Adversarial training in the report: standard against adversarially trained
curves of one model side by side, the clean-vs-robust trade-off of every group,
and the runs that catastrophic overfitting stopped."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..trust import wilson
from .canvas import new_figure
from .combine import CellKey, run_cells
from .figures import (
    _group_curve,
    _mark_eps,
    _style_curve_axes,
    legend_models_optimizers,
    trained_style,
)
from .groups import Group, cell_stat
from .numbers import EpsChoice
from .style import FIG_WIDTH, OPTIMIZER_ORDER, eps_text, fmt, model_color, optimizer_style, ordered


def has_adversarial(groups: Sequence[Group]) -> bool:
    """Whether any group was trained adversarially."""
    return any(g.adversarial for g in groups)


def _panel(ax: Axes, key: CellKey, groups: Sequence[Group], title: str) -> None:
    for g in groups:
        xs, stats = _group_curve(g, key)
        if not xs:
            continue
        color = model_color(g.model)
        ax.fill_between(xs, [s.band[0] for s in stats], [s.band[1] for s in stats],
                        color=color, alpha=0.12, linewidth=0)  # fmt: skip
        ax.plot(xs, [s.mean for s in stats], color=color, markersize=5,
                **optimizer_style(g.optimizer), **trained_style(g))  # fmt: skip
    _style_curve_axes(ax, key.norm, "robust accuracy (worst case)")
    ax.set_title(title)


def side_by_side_figure(
    dataset: str, key: CellKey, model: str, groups: Sequence[Group], choice: EpsChoice | None
) -> Figure | None:
    """One model's robust accuracy against eps: standard training (left) and
    adversarial training (right), same axes. None when either side is missing."""
    mine = [g for g in groups if g.model == model]
    standard = [g for g in mine if not g.adversarial]
    trained = [g for g in mine if g.adversarial]
    if not standard or not trained:
        return None
    fig = new_figure(FIG_WIDTH, 4.6)
    left, right = fig.subplots(1, 2, sharey=True)
    _panel(left, key, standard, "standard training")
    _panel(right, key, trained, "adversarial training")
    right.set_ylabel("")
    for ax in (left, right):
        if choice is not None:
            _mark_eps(ax, choice.eps)
    fig.suptitle(f"{dataset}: {model}, {key.title}; band: 95% interval")
    legend_models_optimizers(
        fig, [model], ordered({g.optimizer for g in mine}, OPTIMIZER_ORDER),
        trainings=sorted({g.training for g in trained}),
    )  # fmt: skip
    return fig


def _clean_point(group: Group, key: CellKey) -> tuple[float, float, float] | None:
    """The clean accuracy of the cell's samples: mean over seeds, lowest and highest bound."""
    found = [run_cells(r).get(key) for r in group.runs]
    cells = [c for c in found if c is not None and c.n]
    if not cells:
        return None
    bounds = [wilson(round(c.clean_accuracy * c.n), c.n) for c in cells]
    mean = sum(c.clean_accuracy for c in cells) / len(cells)
    return mean, min(b[0] for b in bounds), max(b[1] for b in bounds)


def tradeoff_figure(
    dataset: str, key: CellKey, groups: Sequence[Group], choice: EpsChoice
) -> Figure | None:
    """Clean accuracy (x) against worst-case robust accuracy at ε* (y), one point per
    group with its 95% intervals on both axes; adversarially trained groups hollow."""
    fig = new_figure(FIG_WIDTH, 5.2)
    ax = fig.subplots()
    drawn: list[Group] = []
    labels: list[tuple[Group, float, float]] = []
    for g in groups:
        clean, robust = _clean_point(g, key), cell_stat(g, key, choice.eps)
        if clean is None or robust is None:
            continue
        drawn.append(g)
        x, (lo, hi) = clean[0], robust.band
        style = optimizer_style(g.optimizer)
        face = "white" if g.adversarial else model_color(g.model)
        ax.errorbar(x, robust.mean, xerr=[[max(0.0, x - clean[1])], [max(0.0, clean[2] - x)]],
                    yerr=[[max(0.0, robust.mean - lo)], [max(0.0, hi - robust.mean)]], color=model_color(g.model),
                    marker=style["marker"], markersize=9 if g.adversarial else 7,
                    markerfacecolor=face, markeredgewidth=1.6, linestyle="none",
                    capsize=2, elinewidth=1)  # fmt: skip
        if g.adversarial:
            labels.append((g, x, robust.mean))
    if not drawn:
        return None
    _label_points(ax, labels)
    ax.set_xlabel("clean accuracy (same samples)")
    ax.set_ylabel(f"robust accuracy at ε* = {eps_text(choice.eps)}")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{dataset}: the trade-off, {key.title}\nbars: 95% intervals (range over seeds)")
    legend_models_optimizers(
        fig, list(dict.fromkeys(g.model for g in drawn)),
        ordered({g.optimizer for g in drawn}, OPTIMIZER_ORDER),
        trainings=sorted({g.training for g in drawn if g.adversarial}),
    )  # fmt: skip
    return fig


def _label_points(ax: Axes, labels: Sequence[tuple[Group, float, float]]) -> None:
    """Name each adversarially trained point; a label that would print over one already
    placed moves down a line at a time (positions in points, from the final limits)."""
    to_points = 72 / ax.figure.dpi
    ax.get_xlim()  # the limits every point set, before the data are mapped to the canvas
    placed: list[tuple[float, float, float]] = []  # left, bottom, width of each label
    for g, x, y in sorted(labels, key=lambda item: -item[2]):
        px, py = (v * to_points for v in ax.transData.transform((x, y)))
        left, bottom, width = px + 6, py + 4, 4.6 * len(g.training)
        while any(abs(bottom - b) < _LINE and left < a + w and a < left + width
                  for a, b, w in placed):  # fmt: skip
            bottom -= _LINE
        placed.append((left, bottom, width))
        ax.annotate(g.training, (x, y), xytext=(left - px, bottom - py), textcoords="offset points",
                    fontsize=8, color=model_color(g.model))  # fmt: skip


# The height of a line of the points' labels (8-point text), in points.
_LINE = 10.0


def overfitting_notes(groups: Sequence[Group]) -> list[str]:
    """One sentence per run that catastrophic overfitting stopped."""
    notes = []
    for g in groups:
        for run in g.runs:
            c = run.collapsed
            if c is None:
                continue
            notes.append(
                f"{run.label} ({run.name}): catastrophic overfitting at epoch {c.get('epoch')}: "
                f"validation robust accuracy fell to {fmt(c.get('val_robust_acc'), 3)} (best "
                f"{fmt(c.get('best_val_robust_acc'), 3)}); training stopped and kept the weights "
                f"of epoch {c.get('kept_epoch')}."
            )
    return notes
