"""The report's matplotlib figures: one attack on one run, robustness curves per
attack setting, the models x optimizers heatmaps and training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas,
never through pyplot, so this module keeps no global state and works without a
display. Colours encode the model and line styles the optimizer (``style``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .canvas import new_figure
from .gallery import draw_gallery, gallery_size
from .load import AttackRecord, Curve, ReportRun, Setting, record_from_dict
from .numbers import EpsChoice, area_under_curve, strongest_record, value_at
from .style import (
    ACCURACY_COLOR,
    CLASS_NAMES,
    MARK_COLOR,
    MODEL_ORDER,
    OPTIMIZER_ORDER,
    SUCCESS_COLOR,
    attack_title,
    eps_axis_label,
    eps_text,
    fmt,
    model_color,
    norm_name,
    optimizer_style,
    ordered,
)


def _plot_run_curve(
    ax: Axes, curve: Curve, key: str, color: str, style: dict[str, Any], label: str
) -> None:
    xs, ys = list(curve.epsilons), list(getattr(curve, key))
    ax.plot(xs, ys, color=color, label=label, linewidth=1.8, markersize=5, **style)
    if key == "accuracy" and xs[0] > 0:
        # The clean accuracy stands at eps 0; join it to the grid with a thin dotted line.
        clean = curve.clean_accuracy
        ax.plot([0, xs[0]], [clean, ys[0]], color=color, linestyle=":", linewidth=1)
        ax.plot([0], [clean], color=color, marker=style["marker"], markersize=5)


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
        f"{curve.n_samples if curve.n_samples is not None else '?'} {record.setting.split} samples"
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


def _legend_for_runs(fig: Figure, handles: list, labels: list[str]) -> None:
    fig.legend(
        handles,
        labels,
        loc="outside right center",
        fontsize=9,
        title="run",
        title_fontsize=9,
        frameon=False,
    )


def _mark_chosen(ax_acc: Axes, ax_rate: Axes, chosen: EpsChoice) -> None:
    for ax in (ax_acc, ax_rate):
        ax.axvline(chosen.eps, color=MARK_COLOR, linestyle=":", linewidth=1)
    ax_acc.annotate(
        f"ε* = {eps_text(chosen.eps)} (table)",
        (chosen.eps, 1.0),
        fontsize=8,
        color="#555555",
        xytext=(3, -10),
        textcoords="offset points",
    )


def robustness_figure(
    setting: Setting, entries: Sequence[tuple[ReportRun, AttackRecord]], chosen: EpsChoice | None
) -> Figure:
    """Accuracy and success rate against eps for one attack setting, one line per run."""
    fig = new_figure(12.5, 4.6)
    ax_acc, ax_rate = fig.subplots(1, 2)
    per_run = Counter(run.name for run, _ in entries)
    for run, rec in entries:
        color, style = model_color(run.model), optimizer_style(run.optimizer)
        label = run.label if per_run[run.name] == 1 else f"{run.label} [{rec.name}]"
        _plot_run_curve(ax_acc, rec.curve, "accuracy", color, style, label)
        _plot_run_curve(ax_rate, rec.curve, "success_rate", color, style, label)
    _style_curve_axes(ax_acc, setting.norm, "accuracy under attack")
    _style_curve_axes(ax_rate, setting.norm, "attack success rate")
    ax_acc.set_title("accuracy (at ε = 0: clean accuracy)", fontsize=10)
    goal = "misclassified" if setting.target is None else "classified as the target"
    ax_rate.set_title(f"success rate (fraction {goal})", fontsize=10)
    if chosen is not None:
        _mark_chosen(ax_acc, ax_rate, chosen)
    steps = sorted({int(r.steps) for _, r in entries if r.steps})
    detail = f", {'/'.join(map(str, steps))} steps" if steps else ""
    datasets = sorted({run.dataset for run, _ in entries})
    fig.suptitle(f"{setting.title}{detail} on {', '.join(datasets)}", fontsize=12)
    handles, labels = ax_acc.get_legend_handles_labels()
    _legend_for_runs(fig, handles, labels)
    return fig


@dataclass
class _Cell:
    value: float | None
    interpolated: bool
    note: str


@dataclass
class _Panel:
    """One norm's two heatmaps: robust accuracy at eps* and AUC, models x optimizers."""

    acc: list[list[_Cell]]
    auc: list[list[_Cell]]
    attacks: set[str]  # labels of the attacks that filled the cells
    ranges: set[float]  # the largest budget of each record used


def _panel(
    attacked: Sequence[ReportRun], models: list[str], optimizers: list[str], choice: EpsChoice
) -> _Panel:
    empty = [[_Cell(None, False, "") for _ in optimizers] for _ in models]
    panel = _Panel([row[:] for row in empty], [row[:] for row in empty], set(), set())
    used: dict[tuple[int, int], AttackRecord] = {}
    for run in attacked:  # the first run of each model x optimizer pair fills the cell
        rec = strongest_record(run, choice.norm, choice.eps)
        cell = (models.index(run.model), optimizers.index(run.optimizer))
        if rec is not None and cell not in used:
            used[cell] = rec
    # When the cells come from different attacks, the ones that differ from the
    # most common attack say which they are.
    names = Counter(rec.setting.attack for rec in used.values())
    usual = min(names, key=lambda a: (-names[a], a)) if names else ""
    for (i, j), rec in used.items():
        note = "" if rec.setting.attack == usual else attack_title(rec.setting.attack)
        value, interp = value_at(rec.curve, choice.eps)
        panel.acc[i][j] = _Cell(value, interp, note)
        panel.auc[i][j] = _Cell(area_under_curve(rec.curve), False, note)
        panel.attacks.add(rec.label)
        panel.ranges.add(rec.curve.epsilons[-1])
    return panel


def comparison_figure(report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]) -> Figure:
    """Heatmaps, models (rows) x optimizers (columns): robust accuracy at the chosen
    eps and the area under the curve, per norm, for each run's strongest
    untargeted attack; the numbers are written in the cells."""
    attacked = [r for r in report_runs if r.records]  # runs without attacks would be empty rows
    models = ordered((r.model for r in attacked), MODEL_ORDER)
    optimizers = ordered((r.optimizer for r in attacked), OPTIMIZER_ORDER)
    cols = max(1, len(chosen))
    width = max(4.2, 0.95 * len(optimizers) + 1.7)
    height = max(2.2, 0.6 * len(models) + 1.3)
    fig = new_figure(width * cols, height * 2 + 0.4)
    axes = fig.subplots(2, cols, squeeze=False)
    for c, (norm, choice) in enumerate(chosen.items()):
        panel = _panel(attacked, models, optimizers, choice)
        _heatmap(axes[0, c], panel.acc, models, optimizers)
        axes[0, c].set_title(
            f"robust accuracy at ε = {eps_text(choice.eps)} ({norm_name(norm)})\n"
            + ", ".join(sorted(panel.attacks)),
            fontsize=10,
        )
        _heatmap(axes[1, c], panel.auc, models, optimizers)
        span = (
            f"ε in [0, {eps_text(next(iter(panel.ranges)))}]"
            if len(panel.ranges) == 1
            else "ε ranges differ between runs: compare with care"
        )
        axes[1, c].set_title(
            f"area under the curve / ε range ({norm_name(norm)})\n{span}", fontsize=10
        )
    fig.suptitle(
        "Models × optimizers under each run's strongest untargeted attack"
        "  (≈ interpolated, — not attacked)",
        fontsize=12,
    )
    return fig


def _heatmap(ax: Axes, cells: list[list[_Cell]], rows: list[str], cols: list[str]) -> None:
    values = np.array(
        [[np.nan if c.value is None else c.value for c in row] for row in cells], dtype=float
    )
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for label in ax.get_yticklabels():
        label.set_color(model_color(label.get_text()))
        label.set_fontweight("bold")
    ax.tick_params(length=0)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell.value is None:
                ax.text(j, i, "—", ha="center", va="center", color="#777777", fontsize=10)
                continue
            # viridis is dark below ~0.6: white text there, black above.
            ink = "white" if cell.value < 0.6 else "black"
            text = ("≈" if cell.interpolated else "") + fmt(cell.value)
            if cell.note:
                text += f"\n{cell.note}"
            ax.text(j, i, text, ha="center", va="center", color=ink, fontsize=10)


_TRAINING_PANELS = (
    ((0, 0), "train_loss", "training loss"),
    ((0, 1), "val_loss", "validation loss"),
    ((1, 0), "train_acc", "training accuracy"),
    ((1, 1), "val_acc", "validation accuracy"),
    ((0, 2), "lr", "learning rate (at the start of the epoch)"),
)


def _plot_training_run(axes: Any, run: ReportRun, color: str, lrs: list[float]) -> bool:
    """The run's lines in every panel; False when it has no completed epoch."""
    if not run.epochs:
        return False
    style = optimizer_style(run.optimizer)
    epochs = [e.epoch for e in run.epochs]
    for (r, c), key, _ in _TRAINING_PANELS:
        ys = [e.values.get(key) for e in run.epochs]
        if any(v is None for v in ys):
            continue
        axes[r, c].plot(epochs, ys, color=color, linewidth=1.8, markersize=4, **style)
        if key == "lr":
            lrs.extend(v for v in ys if v is not None)
    return True


def _training_legend(ax: Axes, handles: list[Line2D], labels: list[str]) -> None:
    ax.axis("off")
    if not handles:
        ax.text(0.5, 0.5, "no completed epochs yet", ha="center", va="center")
        return
    ax.legend(
        handles,
        labels,
        loc="center",
        fontsize=9,
        title="run (optimizer, schedule)",
        title_fontsize=9,
        frameon=False,
    )


def training_figure(model: str, model_runs: Sequence[ReportRun]) -> Figure:
    """Loss, accuracy (train and validation) and learning rate per epoch of one
    model's runs, one line per run (line style = optimizer)."""
    fig = new_figure(13.5, 7.2)
    axes = fig.subplots(2, 3)
    color = model_color(model)
    handles: list[Line2D] = []
    labels: list[str] = []
    lrs: list[float] = []
    for run in model_runs:
        if _plot_training_run(axes, run, color, lrs):
            style = optimizer_style(run.optimizer)
            handles.append(Line2D([], [], color=color, linewidth=1.8, markersize=5, **style))
            labels.append(_training_label(run))
    for (r, c), key, title in _TRAINING_PANELS:
        ax = axes[r, c]
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if key.endswith("acc"):
            # Autoscaled, not [0, 1]: differences near 1 stay visible.
            ax.set_ylim(top=min(1.02, ax.get_ylim()[1]))
    positive = [v for v in lrs if v > 0]
    if positive and max(positive) / min(positive) > 10:
        axes[0, 2].set_yscale("log")  # optimizers' rates differ by orders of magnitude
    _training_legend(axes[1, 2], handles, labels)
    fig.suptitle(f"Training of {model}: losses, accuracies and learning-rate schedule", fontsize=12)
    return fig


def _training_label(run: ReportRun) -> str:
    parts = [run.optimizer]
    if run.lr is not None:
        parts.append(f"lr {run.lr:g}")
    if run.schedule:
        warm = run.warmup_epochs
        parts.append(run.schedule + (f" + {warm} warm-up" if warm else ""))
    unfinished = "" if run.finished else ", unfinished"
    return f"{run.name}\n({', '.join(parts)}{unfinished})"
