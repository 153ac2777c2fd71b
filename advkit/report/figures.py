"""The report's matplotlib figures: one attack on one run, robustness curves per
attack setting, the models x optimizers heatmaps and training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas,
never through pyplot, so this module keeps no global state and works without a
display. Colours encode the model and line styles the optimizer (``style``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .canvas import new_figure
from .combine import CellKey
from .gallery import draw_gallery, gallery_size
from .groups import Group, Stat, cell_stat, cells
from .load import AttackRecord, record_from_dict
from .numbers import EpsChoice
from .style import (
    ACCURACY_COLOR,
    CLASS_NAMES,
    FIG_WIDTH,
    MARK_COLOR,
    MODEL_ORDER,
    OPTIMIZER_ORDER,
    SUCCESS_COLOR,
    eps_axis_label,
    eps_text,
    fmt,
    model_color,
    optimizer_style,
    ordered,
    plural,
)


def _style_curve_axes(ax: Axes, norm: str, ylabel: str) -> None:
    ax.set_xlabel(eps_axis_label(norm))
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)


def _mark_examples_eps(ax: Axes, eps: float) -> None:
    ax.axvline(eps, color=MARK_COLOR, linestyle=":", linewidth=1)
    ax.annotate(
        f"examples at ε = {eps_text(eps)}",
        (eps, 0.04),
        rotation=90,
        fontsize=8,
        color="#555555",
        ha="right",
        va="bottom",
        xytext=(-3, 0),
        textcoords="offset points",
    )


def _draw_attack_curve(ax: Axes, record: AttackRecord, mark_examples: bool) -> None:
    """Accuracy and success rate against eps, the clean accuracy at eps 0."""
    curve = record.curve
    color = model_color(record.model) if record.model else ACCURACY_COLOR
    eps, acc = curve.epsilons, curve.accuracy
    ax.plot(eps, acc, color=color, marker="o", linewidth=2, label="accuracy under attack")
    ax.plot(
        eps,
        curve.success_rate,
        color=SUCCESS_COLOR,
        marker="x",
        linestyle="--",
        linewidth=1.6,
        label="attack success rate",
    )
    clean = curve.clean_accuracy
    ax.plot(
        [0],
        [clean],
        marker="*",
        markersize=14,
        color=color,
        linestyle="none",
        label=f"clean accuracy {fmt(clean)}",
    )
    if eps[0] > 0:
        ax.plot([0, eps[0]], [clean, acc[0]], color=color, linestyle=":", linewidth=1)
    if mark_examples and record.examples_eps is not None:
        _mark_examples_eps(ax, record.examples_eps)
    _style_curve_axes(ax, record.setting.norm, "fraction of samples")
    ax.legend(loc="center right", fontsize=8, framealpha=0.9)
    excluded = curve.n_excluded
    samples = (
        plural(curve.n_samples, f"{record.setting.split} sample")
        if curve.n_samples is not None
        else f"? {record.setting.split} samples"
    )
    samples += f", {excluded} excluded" if excluded else ""
    ax.set_title(f"{record.title}\n{samples}", fontsize=10)


def attack_figure(record: dict[str, Any], examples: dict[str, torch.Tensor] | None) -> Figure:
    """The figure of one attack on one run (``advkit attack`` saves it in the run).

    Left: the robustness curve, accuracy and attack success rate against eps,
    with the clean accuracy at eps 0. Right (when ``examples`` is given): the
    gallery, clean image / adversarial image / perturbation amplified to fill
    the grey range, each with the predicted class and its confidence: a change
    a person barely notices, which flips the model's decision.

    Args:
        record: an attack record (``attacks/NAME.json``).
        examples: the tensors of ``attacks/NAME.examples.safetensors``, or None.

    Returns:
        The figure (save it with :func:`save_figure`).

    Raises:
        RunError: a record or examples that do not have the documented fields.
    """
    rec = record_from_dict(record, examples)
    curve_w = 5.8
    if examples is not None:
        gallery_w, height, _, n = gallery_size(examples)
    else:
        gallery_w, height, n = 0.0, 4.6, 0
    fig = new_figure(curve_w + gallery_w, height, layout=None)
    width = fig.get_figwidth()
    # The curve's Axes, placed by hand (inches) to leave the gallery its strip.
    ax = fig.add_axes((0.75 / width, 0.7 / height, (curve_w - 1.0) / width, 1 - 1.45 / height))
    _draw_attack_curve(ax, rec, mark_examples=n > 0)
    if examples is not None:
        draw_gallery(
            fig,
            curve_w,
            examples,
            norm=rec.setting.norm,
            eps=rec.examples_eps,
            class_names=CLASS_NAMES.get(rec.dataset),
            title="Adversarial examples: a change a person barely notices flips the decision",
        )
    return fig


def legend_models_optimizers(
    fig: Figure, models: Sequence[str], optimizers: Sequence[str],
    trainings: Sequence[str] = (),
) -> None:  # fmt: skip
    """One legend below the figure: each model once (its colour), each optimizer once
    (its line style and marker, in grey), adversarial training once (thick, hollow)."""
    handles = [Line2D([], [], color=model_color(m), linewidth=3) for m in models]
    handles += [
        Line2D([], [], color="#555555", linewidth=1.6, markersize=6, **optimizer_style(o))
        for o in optimizers
    ]
    labels = [f"model {m}" for m in models] + [f"optimizer {o}" for o in optimizers]
    if trainings:
        handles.append(Line2D([], [], color="#555555", marker="o", linewidth=3.2,
                              markerfacecolor="white", markeredgewidth=1.6))  # fmt: skip
        labels.append("adversarially trained")
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(3, max(1, len(handles))),
        frameon=False,
        handlelength=3.2,
    )


def _mark_eps(ax: Axes, eps: float) -> None:
    ax.axvline(eps, color=MARK_COLOR, linestyle=":", linewidth=1)
    ax.annotate(
        f"ε* = {eps_text(eps)}",
        (eps, 1.0),
        color="#555555",
        xytext=(3, -12),
        textcoords="offset points",
        fontsize=9,
    )


def _group_curve(group: Group, key: CellKey) -> tuple[list[float], list[Stat]]:
    """The budgets every seed of the group measured, and the group's value at each."""
    runs_cells = [c.get(key) for c in cells(group)]
    present = [c for c in runs_cells if c is not None]
    if not present:
        return [], []
    grid = sorted(set.intersection(*(set(c.grid) for c in present)) | {0.0})
    stats = [cell_stat(group, key, e) for e in grid]
    kept = [(e, st) for e, st in zip(grid, stats, strict=True) if st is not None]
    if grid and grid[0] == 0.0:  # at 0: the clean accuracy of the same samples
        kept = [(0.0, Stat([c.clean_accuracy for c in present], [0] * len(present)))] + [
            (e, st) for e, st in kept if e > 0
        ]
    return [e for e, _ in kept], [st for _, st in kept]


def robustness_figure(
    dataset: str, key: CellKey, groups: Sequence[Group], chosen: EpsChoice | None
) -> Figure:
    """Worst-case robust accuracy against eps on one dataset and cell: one line per
    group (the mean over its seeds), a band from its intervals."""
    fig = new_figure(FIG_WIDTH, 5.4)
    ax = fig.subplots()
    shown = []
    for g in groups:
        xs, stats = _group_curve(g, key)
        if not xs:
            continue
        shown.append(g)
        color, style = model_color(g.model), optimizer_style(g.optimizer)
        ax.fill_between(xs, [s.band[0] for s in stats], [s.band[1] for s in stats],
                        color=color, alpha=0.12, linewidth=0)  # fmt: skip
        ax.plot(xs, [s.mean for s in stats], color=color, markersize=5,
                **style, **trained_style(g))  # fmt: skip
    _style_curve_axes(ax, key.norm, "robust accuracy (worst case over attacks)")
    if chosen is not None:
        _mark_eps(ax, chosen.eps)
    seeds = max((len(g.runs) for g in shown), default=1)
    band = (
        "band: 95% interval"
        if seeds == 1
        else "line: mean over seeds; band: lowest to highest 95% bound over seeds"
    )
    ax.set_title(f"{dataset}: robust accuracy, {key.title}\n{band}")
    legend_models_optimizers(
        fig, ordered({g.model for g in shown}, MODEL_ORDER),
        ordered({g.optimizer for g in shown}, OPTIMIZER_ORDER),
        trainings=sorted({g.training for g in shown if g.adversarial}),
    )  # fmt: skip
    return fig


def trained_style(group: Group) -> dict[str, Any]:
    """Standard training: a plain line; adversarial training: thick, hollow markers."""
    if not group.adversarial:
        return {"linewidth": 1.8}
    return {"linewidth": 3.2, "markerfacecolor": "white", "markeredgewidth": 1.6}


def _heat_text(stat: Stat) -> str:
    if len(stat.values) == 1:
        lo, hi = stat.intervals[0] if stat.intervals else (stat.lo, stat.hi)
        return f"{fmt(stat.mean, 2)}\n[{fmt(lo, 2)}, {fmt(hi, 2)}]"
    return f"{fmt(stat.mean, 2)}\n{fmt(stat.lo, 2)}–{fmt(stat.hi, 2)}\n{len(stat.values)} seeds"


def comparison_figure(
    dataset: str, key: CellKey, groups: Sequence[Group], choice: EpsChoice
) -> Figure:
    """Models (rows) x optimizers (columns): the worst-case robust accuracy at ε* in
    cell ``key``, mean over seeds; the cell text gives the 95% interval (one seed)
    or the seeds' range. A colour bar beside it."""
    models = list(dict.fromkeys(g.row for g in sorted(groups, key=lambda g: g.sort_key())))
    optimizers = ordered({g.optimizer for g in groups}, OPTIMIZER_ORDER)
    values = np.full((len(models), len(optimizers)), np.nan)
    texts: dict[tuple[int, int], str] = {}
    for g in groups:
        i, j = models.index(g.row), optimizers.index(g.optimizer)
        stat = cell_stat(g, key, choice.eps)
        if stat is not None and (i, j) not in texts:
            values[i, j], texts[(i, j)] = stat.mean, _heat_text(stat)
    width = min(FIG_WIDTH, max(4.8, 1.25 * len(optimizers) + 2.6))
    fig = new_figure(width, max(2.8, 0.85 * len(models) + 1.9))
    ax = fig.subplots()
    image = heatmap(ax, values, models, optimizers, texts)
    ax.set_xlabel("optimizer")
    ax.set_ylabel("model")
    fig.colorbar(image, ax=ax, label="robust accuracy", fraction=0.08, pad=0.03)
    ax.set_title(f"{dataset}: robust accuracy at ε* = {eps_text(choice.eps)}\n{key.title}")
    return fig


def heatmap(
    ax: Axes, values: np.ndarray, rows: Sequence[str], cols: Sequence[str],
    texts: dict[tuple[int, int], str], *, vmax: float = 1.0,
) -> Any:  # fmt: skip
    """``values`` (NaN: not measured, drawn as a dash) with ``texts`` in the cells."""
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for label in ax.get_yticklabels():
        if label.get_text().split(" · ")[0] in MODEL_ORDER:
            label.set_color(model_color(label.get_text().split(" · ")[0]))
            label.set_fontweight("bold")
    ax.tick_params(length=0)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isnan(v):
                ax.text(j, i, "—", ha="center", va="center", color="#777777")
                continue
            ink = "white" if v < 0.6 * vmax else "black"  # viridis is dark below ~0.6
            ax.text(j, i, texts.get((i, j), fmt(v, 2)), ha="center", va="center", color=ink,
                    fontsize=9)  # fmt: skip
    return image


_TRAINING_PANELS = (
    ("train_loss", "training loss (log scale)"),
    ("val_loss", "validation loss (log scale)"),
    ("val_acc", "validation accuracy (clean)"),
    ("val_robust_acc", "robust validation accuracy"),
    ("lr", "learning rate at the start of the epoch"),
)


def _epoch_stats(group: Group, key: str) -> tuple[list[Any], list[Stat]]:
    """Per epoch that every seed reached: the group's value (mean, min, max)."""
    per_run = [{e.epoch: e.values.get(key) for e in run.epochs} for run in group.runs]
    epochs = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    out = []
    for epoch in epochs:
        values = [p[epoch] for p in per_run]
        if any(v is None for v in values):
            return [], []
        out.append(Stat([float(v) for v in values if v is not None], group.seeds))
    return epochs, out


def _training_panel(ax: Axes, key: str, title: str, groups: Sequence[Group], color: str) -> None:
    for g in groups:
        epochs, stats = _epoch_stats(g, key)
        if not epochs:
            continue
        if len(g.runs) > 1:
            ax.fill_between(epochs, [s.lo for s in stats], [s.hi for s in stats],
                            color=color, alpha=0.15, linewidth=0)  # fmt: skip
        ax.plot(epochs, [s.mean for s in stats], color=color, markersize=4,
                **optimizer_style(g.optimizer), **trained_style(g))  # fmt: skip
        collapsed = [r.collapsed for r in g.runs if r.collapsed]
        if key == "val_robust_acc" and collapsed:
            at = float(collapsed[0].get("epoch") or 0)
            ax.axvline(at, color="#c00000", linestyle=":", linewidth=1.2)
            ax.annotate("catastrophic overfitting", (at, 0.05), color="#c00000", fontsize=8,
                        rotation=90, ha="right", va="bottom")  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if key.endswith("loss") or (key == "lr" and _spread(ax) > 10):
        ax.set_yscale("log")


def training_figure(dataset: str, model: str, groups: Sequence[Group]) -> Figure:
    """Losses (log scale), validation accuracy (clean and, for adversarially trained
    runs, robust) and learning rate per epoch of one model's groups on one dataset:
    line = mean over seeds, band = their range; adversarial training drawn thick."""
    robust = any("val_robust_acc" in e.values for g in groups for r in g.runs for e in r.epochs)
    panels = [p for p in _TRAINING_PANELS if robust or p[0] != "val_robust_acc"]
    rows = (len(panels) + 1) // 2
    fig = new_figure(FIG_WIDTH, 3.3 * rows)
    axes = fig.subplots(rows, 2, squeeze=False).flatten()
    for ax, (key, title) in zip(axes, panels, strict=False):
        _training_panel(ax, key, title, groups, model_color(model))
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    seeds = max((len(g.runs) for g in groups), default=1)
    extra = "" if seeds == 1 else "; line: mean over seeds, band: their range"
    fig.suptitle(f"{dataset}: training of {model}{extra}")
    legend_models_optimizers(
        fig, [model], ordered({g.optimizer for g in groups}, OPTIMIZER_ORDER),
        trainings=sorted({g.training for g in groups if g.adversarial}),
    )  # fmt: skip
    return fig


def _spread(ax: Axes) -> float:
    ys = [float(y) for line in ax.get_lines() for y in np.asarray(line.get_ydata()) if y > 0]
    return max(ys) / min(ys) if ys else 1.0
