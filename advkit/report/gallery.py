"""Adversarial-example galleries: clean image, adversarial image and amplified
perturbation per example, with the predicted class and its confidence; and the
choice of which run and which attacks a report shows galleries of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .canvas import new_figure
from .load import AttackRecord, ReportRun
from .numbers import EpsChoice, strongest
from .style import CLASS_NAMES, RIGHT_COLOR, WRONG_COLOR, eps_text

GALLERY_MAX = 8
"""Examples shown per gallery at most."""

# Gallery geometry, in inches: one Axes whose data units are inches holds every
# image (an AxesImage each) and label, which draws ~10x faster than a grid of
# 24 Axes under a layout engine.
_CELL = 1.15  # image height
_GAP = 0.12  # between columns
_LABELS = 0.8  # row labels on the left
_HEADER = 0.62  # the gallery's title
_TITLE_BAND = 0.44  # two lines of labels above an image
_FOOTER = 0.32  # the norm of each perturbation
_ROW_TOPS = (
    _HEADER + _TITLE_BAND,
    _HEADER + 2 * _TITLE_BAND + _CELL,
    _HEADER + 2 * _TITLE_BAND + 2 * _CELL + 0.1,
)  # clean, adversarial, perturbation


def gallery_size(examples: dict[str, torch.Tensor]) -> tuple[float, float, float, int]:
    """(width, height, cell width) in inches and the number of examples shown."""
    n = min(len(examples["y"]), GALLERY_MAX)
    h, w = examples["x"].shape[-2:]
    cell_w = _CELL * w / h
    width = _LABELS + max(n, 1) * cell_w + (max(n, 1) - 1) * _GAP + 0.15
    height = _HEADER + 2 * _TITLE_BAND + 0.1 + 3 * _CELL + _FOOTER
    return width, height, cell_w, n


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)


def _image(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> what imshow wants: (H, W) or (H, W, 3)."""
    a = t.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _norm_of(delta: torch.Tensor, norm: str) -> float:
    flat = delta.detach().float().flatten()
    return float(flat.abs().max()) if norm == "linf" else float(flat.norm(2))


@dataclass
class _Shown:
    """The first ``n`` examples of a gallery file, as drawn."""

    n: int
    x: torch.Tensor
    x_adv: torch.Tensor
    delta: torch.Tensor  # x_adv - x
    amplify: float  # one factor for the whole gallery, so perturbations compare
    y: list[int]
    target: list[int]  # -1: untargeted
    pred_clean: list[int]
    pred_adv: list[int]
    conf_clean: list[float]
    conf_adv: list[float]


def _shown(examples: dict[str, torch.Tensor], n: int) -> _Shown:
    x, x_adv = examples["x"][:n].float(), examples["x_adv"][:n].float()
    delta = x_adv - x
    largest = float(delta.abs().max()) if n else 0.0
    return _Shown(
        n=n,
        x=x,
        x_adv=x_adv,
        delta=delta,
        amplify=0.5 / largest if largest > 0 else 1.0,
        y=examples["y"][:n].tolist(),
        target=examples["target"][:n].tolist() if "target" in examples else [-1] * n,
        pred_clean=examples["pred_clean"][:n].tolist(),
        pred_adv=examples["pred_adv"][:n].tolist(),
        conf_clean=examples["conf_clean"][:n].tolist(),
        conf_adv=examples["conf_adv"][:n].tolist(),
    )


def _draw_column(
    ax: Axes, s: _Shown, j: int, x0: float, cell_w: float, norm: str, names: Sequence[str] | None
) -> None:
    """Example ``j``: its three images, the labels above them and the norm below."""
    kw: dict[str, Any] = {"cmap": "gray", "vmin": 0, "vmax": 1} if s.x.shape[1] == 1 else {}
    images = (s.x[j], s.x_adv[j], 0.5 + s.amplify * s.delta[j])
    for top, image in zip(_ROW_TOPS, images, strict=True):
        extent = (x0, x0 + cell_w, top + _CELL, top)
        ax.imshow(_image(image), extent=extent, interpolation="nearest", **kw)
        ax.add_patch(
            Rectangle((x0, top), cell_w, _CELL, fill=False, edgecolor="#444444", linewidth=0.6)
        )
    centre = x0 + cell_w / 2
    right = s.pred_clean[j] == s.y[j]
    ax.text(
        centre,
        _ROW_TOPS[0] - 0.05,
        f"true {_class_name(s.y[j], names)}\n"
        f"pred {_class_name(s.pred_clean[j], names)} ({s.conf_clean[j]:.0%})",
        ha="center",
        va="bottom",
        fontsize=9,
        color=RIGHT_COLOR if right else WRONG_COLOR,
    )
    wrong = s.pred_adv[j] != s.y[j]
    head = f"target {_class_name(s.target[j], names)}\n" if s.target[j] >= 0 else ""
    ax.text(
        centre,
        _ROW_TOPS[1] - 0.05,
        f"{head}pred {_class_name(s.pred_adv[j], names)} ({s.conf_adv[j]:.0%})",
        ha="center",
        va="bottom",
        fontsize=9,
        color=WRONG_COLOR if wrong else RIGHT_COLOR,
        fontweight="bold" if wrong else "normal",
    )
    symbol = "∞" if norm == "linf" else "₂"
    ax.text(
        centre,
        _ROW_TOPS[2] + _CELL + 0.06,
        f"‖δ‖{symbol} = {_norm_of(s.delta[j], norm):.3f}",
        ha="center",
        va="top",
        fontsize=8,
    )


def _draw_labels(ax: Axes, s: _Shown, width: float, eps: float | None, title: str) -> None:
    """Row labels on the left, the title on top, a placeholder for an empty gallery."""
    eps_label = f"ε = {eps_text(eps)}" if eps is not None else ""
    row_labels = (
        "clean",
        f"adversarial\n{eps_label}",
        f"perturbation\n× {s.amplify:.3g}, grey = 0",
    )
    for top, label in zip(_ROW_TOPS, row_labels, strict=True):
        ax.text(
            _LABELS - 0.12,
            top + _CELL / 2,
            label,
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
        )
    if not s.n:
        ax.text(width / 2, _ROW_TOPS[1] + _CELL / 2, "no examples", ha="center", va="center")
    ax.text(
        width / 2,
        0.08,
        f"{title}\npredicted class and softmax confidence: green right, red wrong",
        ha="center",
        va="top",
        fontsize=10,
    )


def draw_gallery(
    fig: Figure,
    left: float,
    examples: dict[str, torch.Tensor],
    *,
    norm: str,
    eps: float | None,
    class_names: Sequence[str] | None,
    title: str,
) -> None:
    """Rows: clean, adversarial, amplified perturbation; one column per example.

    Drawn in a strip of ``fig`` that starts ``left`` inches from its left edge.
    """
    width, height, cell_w, n = gallery_size(examples)
    fig_w, fig_h = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes((left / fig_w, 0, width / fig_w, height / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, like the page
    ax.axis("off")
    shown = _shown(examples, n)
    for j in range(n):
        _draw_column(ax, shown, j, _LABELS + j * (cell_w + _GAP), cell_w, norm, class_names)
    _draw_labels(ax, shown, width, eps, title)


def gallery_figure(run: ReportRun, record: AttackRecord) -> Figure:
    """The examples of one attack on one run: clean, adversarial, amplified perturbation."""
    examples = record.examples
    assert examples is not None  # the caller only plans galleries for records with examples
    width, height, _, _ = gallery_size(examples)
    fig = new_figure(width, height, layout=None)
    draw_gallery(
        fig,
        0.0,
        examples,
        norm=record.setting.norm,
        eps=record.examples_eps,
        class_names=CLASS_NAMES.get(run.dataset),
        title=f"{run.label}: {record.setting.title}",
    )
    return fig


def gallery_run(model_runs: Sequence[ReportRun]) -> ReportRun | None:
    """The run whose examples stand for its model: the most accurate one with examples."""
    shown = [r for r in model_runs if any(rec.examples is not None for rec in r.records)]
    if not shown:
        return None
    return max(shown, key=lambda r: (r.test_accuracy or 0.0, r.name))


def gallery_records(run: ReportRun, chosen: dict[str, EpsChoice]) -> list[AttackRecord]:
    """Per norm, target mode, loss and split: the strongest attack with examples
    (judged at the norm's chosen budget, as in the tables)."""
    groups: dict[tuple, list[AttackRecord]] = {}
    for rec in run.records:
        if rec.examples is not None:
            s = rec.setting
            groups.setdefault((s.norm, s.target, s.loss, s.split), []).append(rec)
    best = []
    for key, records in groups.items():
        choice = chosen.get(key[0])
        best.append(strongest(records, choice.eps if choice else None))
    return sorted((r for r in best if r is not None), key=lambda r: (r.setting.sort_key(), r.name))
