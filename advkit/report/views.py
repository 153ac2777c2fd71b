"""The report's closer views: robustness per class, each sample's breaking budget,
FGSM vs PGD vs strong per run, where the attacks send samples and how confident
the model is, clean and attacked.

Per-class numbers need each sample's true label: ``per_sample["y"]`` when the
record stores it, else the labels of the run's split, read through
`advkit.data.load_run_dataset` (``per_sample["index"]`` points into it). The
confusion and confidence views rest on the gallery files, which hold only a few
samples per record: their titles say how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..data import DataError, load_run_dataset
from ..runs import RunError
from ..trust import wilson
from .canvas import new_figure
from .combine import CellKey, Combined, run_cells
from .figures import heatmap
from .groups import Group
from .load import ReportRun
from .numbers import EpsChoice, value_at
from .style import CLASS_NAMES, FIG_WIDTH, eps_text

_LABELS: dict[tuple[str, str], list[int] | None] = {}


def split_labels(run: ReportRun, split: str) -> list[int] | None:
    """The true labels of ``run``'s ``split``, in order; None when its data cannot be read."""
    key = (str(run.path.resolve()), split)
    if key not in _LABELS:
        try:
            with warnings.catch_warnings():  # an unhashed older run: labels only, no numbers
                warnings.simplefilter("ignore")
                data = load_run_dataset(run.path, run.config)
            _LABELS[key] = [int(v) for v in data.split(split)[1].tolist()]
        except (DataError, RunError, OSError, ValueError, KeyError):
            _LABELS[key] = None
    return _LABELS[key]


def sample_labels(run: ReportRun, cell: Combined) -> list[int] | None:
    """The true label of each sample of ``cell`` (stored, else from the run's data)."""
    stored = cell.records[0].curve.per_sample.get("y")
    if stored is not None:
        return [int(v) for v in stored]
    labels = split_labels(run, cell.key.split)
    index = cell.records[0].curve.per_sample.get("index") or []
    if labels is None or any(i >= len(labels) for i in index):
        return None
    return [labels[i] for i in index]


def per_class(run: ReportRun, key: CellKey, eps: float) -> dict[int, tuple[int, int]] | None:
    """Per true class: ``(robust, samples)`` at ``eps`` under the run's worst case."""
    cell = run_cells(run).get(key)
    if cell is None or not cell.exact or not cell.covers(eps):
        return None
    labels = sample_labels(run, cell)
    if labels is None:
        return None
    counts: dict[int, list[int]] = {}
    for label, fooled in zip(labels, cell.fooled_at, strict=True):
        c = counts.setdefault(label, [0, 0])
        c[0] += fooled is None or fooled > eps + 1e-12
        c[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(counts.items())}


def class_name(dataset: str, k: int) -> str:
    names = CLASS_NAMES.get(dataset)
    return names[k] if names is not None and 0 <= k < len(names) else str(k)


def per_class_figure(
    dataset: str, key: CellKey, groups: Sequence[Group], choice: EpsChoice
) -> Figure | None:
    """Groups (rows) x true classes (columns): robust accuracy at ε*, pooled over seeds."""
    rows: list[tuple[str, dict[int, list[int]]]] = []
    for g in groups:
        pooled: dict[int, list[int]] = {}
        for run in g.runs:
            for k, (robust, n) in (per_class(run, key, choice.eps) or {}).items():
                pooled.setdefault(k, [0, 0])
                pooled[k][0] += robust
                pooled[k][1] += n
        if pooled:
            rows.append((g.label, pooled))
    if not rows:
        return None
    classes = sorted({k for _, p in rows for k in p})
    values = np.full((len(rows), len(classes)), np.nan)
    texts = {}
    for i, (_, pooled) in enumerate(rows):
        for k, (robust, n) in pooled.items():
            j = classes.index(k)
            values[i, j], texts[(i, j)] = robust / n, f"{robust / n:.2f}\n{robust}/{n}"
    fig = new_figure(FIG_WIDTH, max(2.8, 0.62 * len(rows) + 2.0))
    ax = fig.subplots()
    image = heatmap(
        ax, values, [r for r, _ in rows], [class_name(dataset, k) for k in classes], texts
    )
    for t in ax.texts:
        t.set_fontsize(7.5)
    ax.set_xlabel("true class")
    fig.colorbar(image, ax=ax, label="robust accuracy", fraction=0.05, pad=0.02)
    ax.set_title(
        f"{dataset}: robust accuracy per true class at ε* = {eps_text(choice.eps)}, {key.title}\n"
        "cell: fraction robust, robust/samples (seeds pooled)"
    )
    return fig


def breaking_figure(dataset: str, key: CellKey, groups: Sequence[Group]) -> Figure | None:
    """Per group, its samples split by breaking budget: clean error, each grid ε,
    not broken on the grid (seeds pooled)."""
    rows = []
    for g in groups:
        found = [c for c in (run_cells(r).get(key) for r in g.runs) if c is not None and c.exact]
        if found:
            rows.append((g, found))
    if not rows:
        return None
    grid = sorted({e for _, found in rows for c in found for e in c.grid if e > 0})
    fig = new_figure(FIG_WIDTH, max(2.6, 0.5 * len(rows) + 2.2))
    ax = fig.subplots()
    colors = _budget_colors(len(grid))
    for i, (_, found) in enumerate(rows):
        shares = _breaking_shares(found, grid)
        left = 0.0
        for j, share in enumerate(shares):
            ax.barh(i, share, left=left, color=colors[j], edgecolor="white", linewidth=0.5)
            if share >= 0.07:
                ink = "white" if 0 < j < len(shares) - 1 and j < len(grid) * 0.6 else "black"
                ax.text(left + share / 2, i, f"{share:.0%}", ha="center", va="center",
                        color=ink, fontsize=8)  # fmt: skip
            left += share
    ax.set_yticks(range(len(rows)), [g.label for g, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of samples")
    handles = [_patch(c) for c in colors]
    labels = ["clean error"] + [f"ε ≤ {eps_text(e)}" for e in grid] + ["not broken"]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(5, len(labels)),
               frameon=False, title="smallest budget that fooled the sample")  # fmt: skip
    ax.set_title(f"{dataset}: breaking budget of each sample, {key.title}")
    return fig


def _patch(color: Any) -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=color)


def _budget_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    ramp = colormaps["magma"]
    return ["#bbbbbb"] + [ramp(0.15 + 0.7 * i / max(n - 1, 1)) for i in range(n)] + ["#d9f0d3"]


def _breaking_shares(found: Sequence[Combined], grid: Sequence[float]) -> list[float]:
    """Shares: clean error, broken first at each ``grid`` eps, never broken."""
    counts = [0] * (len(grid) + 2)
    total = 0
    for c in found:
        clean_wrong = round((1 - c.clean_accuracy) * c.n)
        counts[0] += clean_wrong
        broken = sorted(f for f in c.fooled_at if f is not None)[clean_wrong:]
        for f in broken:
            j = next((k for k, e in enumerate(grid) if f <= e + 1e-12), len(grid) - 1)
            counts[1 + j] += 1
        counts[-1] += sum(1 for f in c.fooled_at if f is None)
        total += c.n
    return [v / max(total, 1) for v in counts]


def gaps_figure(
    dataset: str, key: CellKey, report_runs: Sequence[ReportRun], choice: EpsChoice
) -> Figure | None:
    """Per run: each attack's accuracy at ε* with its 95% interval, and the worst case."""
    rows = []
    for run in report_runs:
        cell = run_cells(run).get(key)
        if cell is not None and cell.covers(choice.eps):
            rows.append((run, cell))
    if not rows or all(len(c.records) < 2 for _, c in rows):
        return None
    fig = new_figure(FIG_WIDTH, max(2.8, 0.55 * len(rows) + 2.2))
    ax = fig.subplots()
    kinds = sorted({r.short for _, c in rows for r in c.records})
    markers = ("o", "s", "^", "D", "v", "P", "X")
    for i, (_, cell) in enumerate(rows):
        for rec in cell.records:
            _gap_point(ax, i, kinds.index(rec.short), rec, choice.eps, markers)
        lo, hi = cell.interval_at(choice.eps)
        v = cell.accuracy_at(choice.eps)
        ax.errorbar([v], [i + 0.3], xerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]], fmt="*", color="black",
                    markersize=10, capsize=3, label="worst case" if i == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(rows)), [r.label for r, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"accuracy at ε* = {eps_text(choice.eps)} (95% interval)")
    ax.grid(True, axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="outside lower center",
               ncol=min(4, len(unique)), frameon=False)  # fmt: skip
    ax.set_title(f"{dataset}: each attack vs the worst case per run, {key.title}")
    return fig


def _gap_point(ax: Any, i: int, k: int, rec: Any, eps: float, markers: Sequence[str]) -> None:
    value, _ = value_at(rec.curve, eps)
    if value is None:
        return
    n = rec.curve.n_samples or 0
    lo, hi = wilson(round(value * n), n)
    offset = -0.3 + 0.45 * k / 6
    ax.errorbar([value], [i + offset], xerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                fmt=markers[k % len(markers)], color=f"C{k}", capsize=2, markersize=6,
                label=rec.short)  # fmt: skip


def gallery_samples(runs: Sequence[ReportRun], key: CellKey) -> dict[str, torch.Tensor] | None:
    """The gallery examples of ``runs`` in cell ``key``, concatenated (one record per run:
    the first with examples, by name)."""
    found: list[dict[str, torch.Tensor]] = []
    for run in runs:
        recs = sorted(
            (r for r in run.records if r.examples is not None and _key(r) == key),
            key=lambda r: r.name,
        )
        if recs:
            found.append(recs[0].examples or {})
    if not found:
        return None
    keys = ("y", "pred_adv", "conf_clean", "conf_adv", "pred_clean")
    return {k: torch.cat([f[k].reshape(-1) for f in found]) for k in keys}


def _key(rec: Any) -> CellKey:
    s = rec.setting
    return CellKey(s.norm, s.target, s.split)


def confusion_figure(dataset: str, key: CellKey, runs: Sequence[ReportRun]) -> Figure | None:
    """True class (rows) x class predicted under attack (columns), counts of the stored
    gallery examples, all runs of the dataset pooled."""
    ex = gallery_samples(runs, key)
    if ex is None:
        return None
    y, pred = ex["y"].tolist(), ex["pred_adv"].tolist()
    k = max(max(y), max(pred)) + 1
    counts = np.zeros((k, k))
    for a, b in zip(y, pred, strict=True):
        counts[a, b] += 1
    values = np.where(counts > 0, counts, np.nan)
    texts = {(i, j): str(int(counts[i, j])) for i in range(k) for j in range(k) if counts[i, j]}
    fig = new_figure(min(FIG_WIDTH, 0.5 * k + 2.8), min(FIG_WIDTH, 0.45 * k + 2.2))
    ax = fig.subplots()
    names = [class_name(dataset, c) for c in range(k)]
    image = heatmap(ax, values, names, names, texts, vmax=float(counts.max()))
    fig.colorbar(image, ax=ax, label="examples", fraction=0.06, pad=0.03)
    ax.set_xlabel("predicted under attack")
    ax.set_ylabel("true class")
    ax.set_title(f"{dataset}: where attacks send samples, {key.title}\n"
                 f"{len(y)} stored gallery examples of {len(runs)} runs")  # fmt: skip
    return fig


def confidence_figure(dataset: str, key: CellKey, runs: Sequence[ReportRun]) -> Figure | None:
    """Histograms of the predicted class's softmax probability, clean vs attacked,
    on the stored gallery examples."""
    ex = gallery_samples(runs, key)
    if ex is None:
        return None
    fig = new_figure(FIG_WIDTH, 3.8)
    ax = fig.subplots()
    bins = [i / 10 for i in range(11)]
    ax.hist(ex["conf_clean"].numpy(), bins=bins, alpha=0.6, color="#1a7f37", label="clean")
    ax.hist(ex["conf_adv"].numpy(), bins=bins, alpha=0.6, color="#c00000", label="attacked")
    ax.set_xlabel("confidence: softmax probability of the predicted class")
    ax.set_ylabel("examples")
    ax.legend(loc="upper left")
    n = len(ex["y"])
    ax.set_title(f"{dataset}: confidence, clean vs attacked, {key.title}\n"
                 f"{n} stored gallery examples of {len(runs)} runs")  # fmt: skip
    return fig


def wrong_share(runs: Sequence[ReportRun], key: CellKey) -> tuple[int, int] | None:
    """``(misclassified under attack, examples)`` of the pooled gallery examples."""
    ex = gallery_samples(runs, key)
    if ex is None:
        return None
    return int((ex["pred_adv"] != ex["y"]).sum()), len(ex["y"])
