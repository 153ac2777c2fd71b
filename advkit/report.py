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
the area under each curve and, where a run's grid lacks the chosen budget, a
linear interpolation (marked with ``≈``).

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas,
never through pyplot, so this module keeps no global state and works without a
display. Colours encode the model and line styles the optimizer, the same in
every figure (``MODEL_COLORS``, ``OPTIMIZER_STYLES``).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from . import __version__, runs
from .runs import RunError

# --- one visual vocabulary for every figure ------------------------------------

MODEL_COLORS: dict[str, str] = {
    "mlp": "#1f77b4",  # blue
    "bncnn": "#d62728",  # red
    "attention": "#2ca02c",  # green
}
"""Colour of each course model, the same in every figure."""

OPTIMIZER_STYLES: dict[str, dict[str, Any]] = {
    "sgd": {"linestyle": ":", "marker": "v"},
    "momentum": {"linestyle": "-.", "marker": "^"},
    "adagrad": {"linestyle": (0, (1, 1)), "marker": "P"},
    "rmsprop": {"linestyle": (0, (5, 1, 1, 1, 1, 1)), "marker": "D"},
    "adam": {"linestyle": "-", "marker": "o"},
    "adamw": {"linestyle": "--", "marker": "s"},
}
"""Line style and marker of each optimizer, the same in every figure."""

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
ATTACK_NAMES = {"pgd": "PGD", "fgsm": "FGSM"}
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
DECIMALS = 4
"""Decimals of every accuracy, success rate and AUC shown in tables and figures."""

_GALLERY_MAX = 8
_ACCURACY_COLOR = "#222222"
_SUCCESS_COLOR = "#e6550d"


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


def fmt(value: float | None, decimals: int = DECIMALS) -> str:
    """A number with a fixed number of decimals; ``—`` for a missing one."""
    return "—" if value is None else f"{value:.{decimals}f}"


def eps_axis_label(norm: str) -> str:
    """The x-axis label of a robustness curve: the norm and the pixel units."""
    return f"ε ({NORM_NAMES.get(norm, norm)} norm, pixel units in [0, 1])"


def _eps(value: float) -> str:
    return f"{value:g}"


# --- attack settings ----------------------------------------------------------


class Setting(NamedTuple):
    """What groups attack records into one robustness figure."""

    attack: str
    norm: str
    target: Any  # None, "random", "least-likely" or a class index
    loss: str

    @property
    def slug(self) -> str:
        """File-name part, as the record names: ``pgd-linf-untargeted``, ``pgd-l2-target-3-lecture``."""
        parts = [self.attack, self.norm, target_slug(self.target)]
        if self.loss != "ce":
            parts.append(self.loss)
        return _safe("-".join(str(p) for p in parts))

    @property
    def title(self) -> str:
        """Human name: ``PGD L∞ untargeted``, ``FGSM L2 targeted (random), loss margin``."""
        name = f"{ATTACK_NAMES.get(self.attack, self.attack)} {NORM_NAMES.get(self.norm, self.norm)} {target_label(self.target)}"
        return name if self.loss == "ce" else f"{name}, loss {self.loss}"

    def sort_key(self) -> tuple:
        return (
            self.target is not None,
            _rank(self.attack, ("pgd", "fgsm")),
            _rank(self.norm, ("linf", "l2")),
            str(self.target),
            self.loss != "ce",
            self.loss,
        )


def target_slug(target: Any) -> str:
    return "untargeted" if target is None else f"target-{target}"


def target_label(target: Any) -> str:
    if target is None:
        return "untargeted"
    if isinstance(target, int):
        return f"targeted (class {target})"
    return f"targeted ({target})"


def _rank(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


# --- reading runs ---------------------------------------------------------------


@dataclass
class AttackRecord:
    """One ``attacks/NAME.json`` of a run and its gallery examples."""

    path: Path
    data: dict[str, Any]
    examples: dict[str, torch.Tensor] | None

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.path.stem)

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def curve(self) -> dict[str, Any]:
        return self.data["curve"]

    @property
    def setting(self) -> Setting:
        s = self.settings
        return Setting(s["attack"], s["norm"], s.get("target"), s.get("loss") or "ce")

    @property
    def strength(self) -> tuple:
        """Higher is stronger: PGD over FGSM, then more steps x restarts."""
        s = self.settings
        work = (s.get("steps") or 1) * (s.get("restarts") or 1)
        return (s["attack"] == "pgd", work, s.get("loss", "ce") == "ce")


@dataclass
class ReportRun:
    """A run directory as the report sees it."""

    path: Path
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    records: list[AttackRecord]
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.config["model"]["name"])

    @property
    def optimizer(self) -> str:
        return str(self.config["optimizer"]["name"])

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", {}).get("name", "?"))

    @property
    def label(self) -> str:
        """Legend label: the run name, plus model and optimizer when the name lacks them."""
        if self.model in self.name and self.optimizer in self.name:
            return self.name
        return f"{self.name} ({self.model}, {self.optimizer})"


def _is_run(path: Path) -> bool:
    return (path / runs.CONFIG).is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by ``paths``, in order, without repeats.

    A path that is not a run itself but whose subdirectories hold runs stands
    for those runs (``advkit report runs/`` is ``advkit report runs/*``).

    Raises:
        RunError: a path that does not exist, or is neither a run directory nor
            a directory holding runs.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunError(f"run directory {str(p)!r} does not exist")
        if not p.is_dir():
            raise RunError(f"{str(p)!r} is not a run directory (it is a file)")
        if _is_run(p):
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and _is_run(c))
        if not children:
            raise RunError(
                f"{str(p)!r} is not a run directory: it has no {runs.CONFIG} "
                "and no subdirectory holding one"
            )
        found.extend(children)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_record(data: Any, path: Path) -> None:
    def bad(what: str) -> RunError:
        return RunError(f"{path} is not a valid attack record: {what}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    settings, curve = data.get("settings"), data.get("curve")
    if not isinstance(settings, dict) or not isinstance(curve, dict):
        raise bad("it needs 'settings' and 'curve' objects")
    for key in ("attack", "norm"):
        if not isinstance(settings.get(key), str):
            raise bad(f"settings.{key} is missing")
    lists: list[Any] = [curve.get(k) for k in ("epsilons", "accuracy", "success_rate")]
    if not all(isinstance(v, list) and v and all(_number(x) for x in v) for v in lists):
        raise bad("curve.epsilons, curve.accuracy and curve.success_rate must be lists of numbers")
    if len({len(v) for v in lists}) != 1:
        raise bad("curve.epsilons, curve.accuracy and curve.success_rate differ in length")
    if lists[0] != sorted(lists[0]) or lists[0][0] < 0:
        raise bad("curve.epsilons must be increasing and >= 0")
    if not _number(curve.get("clean_accuracy")):
        raise bad("curve.clean_accuracy is missing")


_EXAMPLE_KEYS = ("x", "x_adv", "y", "pred_clean", "pred_adv", "conf_clean", "conf_adv")


def _check_examples(tensors: dict[str, torch.Tensor], path: Path) -> None:
    missing = [k for k in _EXAMPLE_KEYS if k not in tensors]
    if missing:
        raise RunError(f"{path} is not a gallery file: it lacks {', '.join(missing)}")
    x, x_adv = tensors["x"], tensors["x_adv"]
    if x.ndim != 4 or x.shape != x_adv.shape or x.shape[1] not in (1, 3):
        raise RunError(
            f"{path} is not a gallery file: x and x_adv must be (n, 1 or 3, H, W), "
            f"got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    n = len(x)
    if any(len(tensors[k]) != n for k in _EXAMPLE_KEYS):
        raise RunError(
            f"{path} is not a gallery file: its tensors hold different numbers of samples"
        )


def load_report_run(path: str | Path) -> ReportRun:
    """Read what the report needs from a run directory.

    Missing pieces (no ``summary.json``, no attacks, no examples file) become
    notes; corrupt ones are errors.

    Raises:
        RunError: no ``config.json``, or a corrupt config, metrics, attack
            record or examples file (the message names the file).
    """
    path = Path(path)
    if not _is_run(path):
        raise RunError(f"{str(path)!r} is not a run directory: it has no {runs.CONFIG}")
    config = runs.read_json(path / runs.CONFIG)
    if not (
        isinstance(config, dict)
        and isinstance(config.get("model"), dict)
        and isinstance(config.get("optimizer"), dict)
        and "name" in config["model"]
        and "name" in config["optimizer"]
    ):
        raise RunError(
            f"{path / runs.CONFIG} does not hold a run config (model and optimizer names)"
        )
    metrics = runs.read_jsonl(path / runs.METRICS)
    summary = None
    notes: list[str] = []
    if (path / runs.SUMMARY).exists():
        summary = runs.read_json(path / runs.SUMMARY)
        if not isinstance(summary, dict):
            raise RunError(f"{path / runs.SUMMARY} does not hold a training summary")
    else:
        notes.append(
            f"training did not finish ({len(metrics)} epochs in metrics.jsonl, no summary.json)"
        )
    records = []
    for file in sorted((path / "attacks").glob("*.json")):
        data = runs.read_json(file)
        _check_record(data, file)
        examples = None
        ex = data.get("examples")
        if isinstance(ex, dict) and ex.get("file"):
            ex_path = file.parent / str(ex["file"])
            if ex_path.exists():
                examples = runs.read_safetensors(ex_path)
                _check_examples(examples, ex_path)
            else:
                notes.append(f"{file.name}: its examples file {ex['file']} is missing")
        records.append(AttackRecord(file, data, examples))
    if not records:
        notes.append(f"no attacks yet (run: advkit attack {path} --attack pgd --norm linf)")
    return ReportRun(path, path.name, config, metrics, summary, records, notes)


# --- numbers: the chosen eps, interpolation, area under the curve ----------------


def _curve_points(curve: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Epsilons and accuracies, with the clean accuracy at eps 0 when the grid lacks it."""
    xs, ys = list(curve["epsilons"]), list(curve["accuracy"])
    if xs[0] > 0:
        xs, ys = [0.0, *xs], [curve["clean_accuracy"], *ys]
    return xs, ys


def value_at(curve: dict[str, Any], eps: float) -> tuple[float | None, bool]:
    """The curve's accuracy at ``eps``: ``(value, interpolated)``.

    The JSON number itself when ``eps`` is on the grid; else a linear
    interpolation between its neighbours (``interpolated`` True); None beyond
    the largest budget (no extrapolation).
    """
    for e, a in zip(curve["epsilons"], curve["accuracy"], strict=True):
        if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
            return a, False
    xs, ys = _curve_points(curve)
    if eps < xs[0] or eps > xs[-1]:
        return None, False
    return float(np.interp(eps, xs, ys)), True


def area_under_curve(curve: dict[str, Any]) -> float | None:
    """Area under accuracy vs eps over ``[0, max eps]``, divided by ``max eps``.

    1 means no accuracy lost anywhere on the grid, 0 no accuracy at all; the
    clean accuracy stands at eps 0 when the grid lacks it. None for a grid of
    eps 0 only.
    """
    xs, ys = _curve_points(curve)
    if xs[-1] <= 0:
        return None
    area = sum(
        (x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False)
    )
    return area / xs[-1]


@dataclass
class EpsChoice:
    """The budget at which a norm's robust accuracies are compared."""

    norm: str
    eps: float
    how: str  # "given", "middle of the common grid", "middle of all grids (no common one)"


def strongest_record(run: ReportRun, norm: str) -> AttackRecord | None:
    """The run's strongest untargeted attack under ``norm`` (PGD over FGSM, most steps)."""
    candidates = [r for r in run.records if r.setting.norm == norm and r.setting.target is None]
    if not candidates:
        return None
    return max(
        candidates, key=lambda r: (r.strength, r.name)
    )  # name breaks ties the same way each time


def choose_eps(
    report_runs: Sequence[ReportRun], given: dict[str, float | None]
) -> dict[str, EpsChoice]:
    """The comparison budget of each norm that has attack records.

    The given eps when there is one; else the middle nonzero budget of the grid
    the strongest untargeted attacks of all runs share; else the middle of all
    their budgets (then some values are interpolated, and marked).
    """
    choices = {}
    for norm in (
        "linf",
        "l2",
        *sorted({r.setting.norm for run in report_runs for r in run.records}),
    ):
        if norm in choices:
            continue
        grids = []
        for run in report_runs:
            rec = strongest_record(run, norm) or next(
                (r for r in run.records if r.setting.norm == norm), None
            )
            if rec is not None:
                grids.append([e for e in rec.curve["epsilons"] if e > 0])
        if not grids:
            continue
        if given.get(norm) is not None:
            choices[norm] = EpsChoice(norm, float(given[norm]), "given")  # type: ignore[arg-type]
            continue
        common = sorted(set(grids[0]).intersection(*grids[1:]))
        how = "middle of the common grid"
        if not common:
            common = sorted(set().union(*grids))
            how = "middle of all grids (no budget common to every run; some values interpolated)"
        if not common:  # only eps 0 anywhere
            continue
        choices[norm] = EpsChoice(norm, common[(len(common) - 1) // 2], how)
    return choices


# --- drawing --------------------------------------------------------------------


def _new_figure(width: float, height: float, layout: Any = "constrained") -> Figure:
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


# Gallery geometry, in inches: one Axes whose data units are inches holds every
# image (an AxesImage each) and label, which draws ~10x faster than a grid of
# 24 Axes under a layout engine.
_CELL = 1.15  # image height
_GAP = 0.12  # between columns
_LABELS = 0.8  # row labels on the left
_HEADER = 0.62  # the gallery's title
_TITLE_BAND = 0.44  # two lines of labels above an image
_FOOTER = 0.32  # the norm of each perturbation


def _gallery_size(examples: dict[str, torch.Tensor]) -> tuple[float, float, float, int]:
    """(width, height, cell width) in inches and the number of examples shown."""
    n = min(len(examples["y"]), _GALLERY_MAX)
    h, w = examples["x"].shape[-2:]
    cell_w = _CELL * w / h
    width = _LABELS + max(n, 1) * cell_w + (max(n, 1) - 1) * _GAP + 0.15
    height = _HEADER + 2 * _TITLE_BAND + 0.1 + 3 * _CELL + _FOOTER
    return width, height, cell_w, n


def _draw_gallery(
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
    width, height, cell_w, n = _gallery_size(examples)
    fig_w, fig_h = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes((left / fig_w, 0, width / fig_w, height / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, like the page
    ax.axis("off")
    x, x_adv = examples["x"][:n].float(), examples["x_adv"][:n].float()
    y = examples["y"][:n].tolist()
    target = examples["target"][:n].tolist() if "target" in examples else [-1] * n
    pred_clean, pred_adv = examples["pred_clean"][:n].tolist(), examples["pred_adv"][:n].tolist()
    conf_clean, conf_adv = examples["conf_clean"][:n].tolist(), examples["conf_adv"][:n].tolist()
    delta = x_adv - x
    largest = float(delta.abs().max()) if n else 0.0
    # One factor for the whole gallery, so the perturbations compare with each other.
    amplify = 0.5 / largest if largest > 0 else 1.0
    kw: dict[str, Any] = {"cmap": "gray", "vmin": 0, "vmax": 1} if x.shape[1] == 1 else {}

    def name(i: int) -> str:
        return _class_name(int(i), class_names)

    tops = [
        _HEADER + _TITLE_BAND,
        _HEADER + 2 * _TITLE_BAND + _CELL,
        _HEADER + 2 * _TITLE_BAND + 2 * _CELL + 0.1,
    ]
    ok, bad = "#1a7f37", "#c00000"
    for j in range(n):
        x0 = _LABELS + j * (cell_w + _GAP)
        images = (x[j], x_adv[j], 0.5 + amplify * delta[j])
        for top, image in zip(tops, images, strict=True):
            ax.imshow(
                _image(image),
                extent=(x0, x0 + cell_w, top + _CELL, top),
                interpolation="nearest",
                **kw,
            )
            ax.add_patch(
                Rectangle((x0, top), cell_w, _CELL, fill=False, edgecolor="#444444", linewidth=0.6)
            )
        centre = x0 + cell_w / 2
        ax.text(
            centre,
            tops[0] - 0.05,
            f"true {name(y[j])}\npred {name(pred_clean[j])} ({conf_clean[j]:.0%})",
            ha="center",
            va="bottom",
            fontsize=9,
            color=ok if pred_clean[j] == y[j] else bad,
        )
        wrong = pred_adv[j] != y[j]
        head = f"target {name(target[j])}\n" if target[j] >= 0 else ""
        ax.text(
            centre,
            tops[1] - 0.05,
            f"{head}pred {name(pred_adv[j])} ({conf_adv[j]:.0%})",
            ha="center",
            va="bottom",
            fontsize=9,
            color=bad if wrong else ok,
            fontweight="bold" if wrong else "normal",
        )
        ax.text(
            centre,
            tops[2] + _CELL + 0.06,
            f"‖δ‖{'∞' if norm == 'linf' else '₂'} = {_norm_of(delta[j], norm):.3f}",
            ha="center",
            va="top",
            fontsize=8,
        )
    eps_text = f"ε = {_eps(eps)}" if eps is not None else ""
    row_labels = ("clean", f"adversarial\n{eps_text}", f"perturbation\n× {amplify:.3g}, grey = 0")
    for top, label in zip(tops, row_labels, strict=True):
        ax.text(
            _LABELS - 0.12,
            top + _CELL / 2,
            label,
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
        )
    if not n:
        ax.text(width / 2, tops[1] + _CELL / 2, "no examples", ha="center", va="center")
    ax.text(
        width / 2,
        0.08,
        f"{title}\npredicted class and softmax confidence: green right, red wrong",
        ha="center",
        va="top",
        fontsize=10,
    )


def _record_title(record: dict[str, Any]) -> str:
    s = record["settings"]
    setting = Setting(s["attack"], s["norm"], s.get("target"), s.get("loss") or "ce")
    steps = f", {s['steps']} steps" if s["attack"] == "pgd" and s.get("steps") else ""
    who = " · ".join(str(record[k]) for k in ("model", "optimizer") if record.get(k))
    data = f" on {record['dataset']}" if record.get("dataset") else ""
    return f"{who}{data}: {setting.title}{steps}" if who else f"{setting.title}{steps}"


def _plot_run_curve(
    ax, curve: dict[str, Any], key: str, color: str, style: dict[str, Any], label: str
) -> None:
    xs, ys = list(curve["epsilons"]), list(curve[key])
    ax.plot(xs, ys, color=color, label=label, linewidth=1.8, markersize=5, **style)
    if key == "accuracy" and xs[0] > 0:
        # The clean accuracy stands at eps 0; join it to the grid with a thin dotted line.
        ax.plot(
            [0, xs[0]], [curve["clean_accuracy"], ys[0]], color=color, linestyle=":", linewidth=1
        )
        ax.plot([0], [curve["clean_accuracy"]], color=color, marker=style["marker"], markersize=5)


def _style_curve_axes(ax, norm: str, ylabel: str) -> None:
    ax.set_xlabel(eps_axis_label(norm))
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)


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
    name = Path(str(record.get("name", "record")) if isinstance(record, dict) else "record")
    _check_record(record, name)
    if examples is not None:
        _check_examples(examples, name)
    curve, s = record["curve"], record["settings"]
    curve_w = 5.8
    if examples is not None:
        gallery_w, height, _, n = _gallery_size(examples)
    else:
        gallery_w, height, n = 0.0, 4.6, 0
    fig = _new_figure(curve_w + gallery_w, height, layout=None)
    width = fig.get_figwidth()
    # The curve's Axes, placed by hand (inches) to leave the gallery its strip.
    ax = fig.add_axes((0.75 / width, 0.7 / height, (curve_w - 1.0) / width, 1 - 1.45 / height))
    model = str(record.get("model", ""))
    color = model_color(model) if model else _ACCURACY_COLOR
    eps, acc, rate = curve["epsilons"], curve["accuracy"], curve["success_rate"]
    ax.plot(eps, acc, color=color, marker="o", linewidth=2, label="accuracy under attack")
    ax.plot(
        eps,
        rate,
        color=_SUCCESS_COLOR,
        marker="x",
        linestyle="--",
        linewidth=1.6,
        label="attack success rate",
    )
    clean = curve["clean_accuracy"]
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
    ex_eps: Any = (record.get("examples") or {}).get("eps")
    if n and _number(ex_eps):
        ax.axvline(ex_eps, color="#888888", linestyle=":", linewidth=1)
        ax.annotate(
            f"examples at ε = {_eps(ex_eps)}",
            (ex_eps, 0.04),
            rotation=90,
            fontsize=8,
            color="#555555",
            ha="right",
            va="bottom",
            xytext=(-3, 0),
            textcoords="offset points",
        )
    _style_curve_axes(ax, s["norm"], "fraction of samples")
    ax.legend(loc="center right", fontsize=8, framealpha=0.9)
    excluded = curve.get("n_excluded") or 0
    samples = f"{curve.get('n_samples', '?')} {s.get('split', 'test')} samples" + (
        f", {excluded} excluded" if excluded else ""
    )
    ax.set_title(f"{_record_title(record)}\n{samples}", fontsize=10)
    if examples is not None:
        _draw_gallery(
            fig,
            curve_w,
            examples,
            norm=s["norm"],
            eps=ex_eps if _number(ex_eps) else None,
            class_names=CLASS_NAMES.get(str(record.get("dataset"))),
            title="Adversarial examples: a change a person barely notices flips the decision",
        )
    return fig


def gallery_figure(run: ReportRun, record: AttackRecord) -> Figure:
    """The examples of one attack on one run: clean, adversarial, amplified perturbation."""
    examples = record.examples
    assert examples is not None  # the caller only plans galleries for records with examples
    width, height, _, _ = _gallery_size(examples)
    fig = _new_figure(width, height, layout=None)
    ex_eps = (record.data.get("examples") or {}).get("eps")
    _draw_gallery(
        fig,
        0.0,
        examples,
        norm=record.setting.norm,
        eps=ex_eps if _number(ex_eps) else None,
        class_names=CLASS_NAMES.get(run.dataset),
        title=f"{run.label}: {record.setting.title}",
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


def robustness_figure(
    setting: Setting, entries: Sequence[tuple[ReportRun, AttackRecord]], chosen: EpsChoice | None
) -> Figure:
    """Accuracy and success rate against eps for one attack setting, one line per run."""
    fig = _new_figure(12.5, 4.6)
    ax_acc, ax_rate = fig.subplots(1, 2)
    per_run: dict[str, int] = {}
    for run, _ in entries:
        per_run[run.name] = per_run.get(run.name, 0) + 1
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
        for ax in (ax_acc, ax_rate):
            ax.axvline(chosen.eps, color="#888888", linestyle=":", linewidth=1)
        ax_acc.annotate(
            f"ε* = {_eps(chosen.eps)} (table)",
            (chosen.eps, 1.0),
            fontsize=8,
            color="#555555",
            xytext=(3, -10),
            textcoords="offset points",
        )
    steps = sorted({int(r.settings["steps"]) for _, r in entries if r.settings.get("steps")})
    detail = f", {'/'.join(map(str, steps))} steps" if setting.attack == "pgd" and steps else ""
    datasets = sorted({run.dataset for run, _ in entries})
    fig.suptitle(f"{setting.title}{detail} on {', '.join(datasets)}", fontsize=12)
    handles, labels = ax_acc.get_legend_handles_labels()
    _legend_for_runs(fig, handles, labels)
    return fig


def _ordered(names: set[str], order: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: _rank(n, order))


@dataclass
class _Cell:
    value: float | None
    interpolated: bool
    note: str


def comparison_figure(report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]) -> Figure:
    """Heatmaps, models (rows) x optimizers (columns): robust accuracy at the chosen
    eps and the area under the curve, per norm, for each run's strongest
    untargeted attack; the numbers are written in the cells."""
    attacked = [r for r in report_runs if r.records]  # runs without attacks would be empty rows
    models = _ordered({r.model for r in attacked}, MODEL_ORDER)
    optimizers = _ordered({r.optimizer for r in attacked}, OPTIMIZER_ORDER)
    norms = list(chosen)
    cols = max(1, len(norms))
    width = max(4.2, 0.95 * len(optimizers) + 1.7)
    height = max(2.2, 0.6 * len(models) + 1.3)
    fig = _new_figure(width * cols, height * 2 + 0.4)
    axes = fig.subplots(2, cols, squeeze=False)
    for c, norm in enumerate(norms):
        acc = [[_Cell(None, False, "") for _ in optimizers] for _ in models]
        auc = [[_Cell(None, False, "") for _ in optimizers] for _ in models]
        attacks_used, ranges = set(), set()
        for run in attacked:  # the first run of each model x optimizer pair fills the cell
            rec = strongest_record(run, norm)
            if rec is None:
                continue
            i, j = models.index(run.model), optimizers.index(run.optimizer)
            if acc[i][j].value is not None or auc[i][j].value is not None:
                continue
            note = "" if rec.settings["attack"] == "pgd" else "FGSM"
            value, interp = value_at(rec.curve, chosen[norm].eps)
            acc[i][j] = _Cell(value, interp, note)
            auc[i][j] = _Cell(area_under_curve(rec.curve), False, note)
            attacks_used.add(_attack_short(rec))
            ranges.add(rec.curve["epsilons"][-1])
        used = ", ".join(sorted(attacks_used))
        _heatmap(axes[0, c], acc, models, optimizers)
        axes[0, c].set_title(
            f"robust accuracy at ε = {_eps(chosen[norm].eps)} ({NORM_NAMES.get(norm, norm)})\n{used}",
            fontsize=10,
        )
        _heatmap(axes[1, c], auc, models, optimizers)
        span = (
            f"ε in [0, {_eps(next(iter(ranges)))}]"
            if len(ranges) == 1
            else "ε ranges differ between runs: compare with care"
        )
        axes[1, c].set_title(
            f"area under the curve / ε range ({NORM_NAMES.get(norm, norm)})\n{span}", fontsize=10
        )
    fig.suptitle(
        "Models × optimizers under each run's strongest untargeted attack"
        "  (≈ interpolated, — not attacked)",
        fontsize=12,
    )
    return fig


def _attack_short(rec: AttackRecord) -> str:
    s = rec.settings
    steps = f"-{s['steps']}" if s["attack"] == "pgd" and s.get("steps") else ""
    restarts = f"×{s['restarts']}" if (s.get("restarts") or 1) > 1 else ""
    loss = f" {s['loss']}" if s.get("loss", "ce") != "ce" else ""
    return f"{ATTACK_NAMES.get(s['attack'], s['attack'])}{steps}{restarts}{loss} untargeted"


def _heatmap(ax, cells: list[list[_Cell]], rows: list[str], cols: list[str]) -> None:
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


def training_figure(model: str, model_runs: Sequence[ReportRun]) -> Figure:
    """Loss, accuracy (train and validation) and learning rate per epoch of one
    model's runs, one line per run (line style = optimizer)."""
    fig = _new_figure(13.5, 7.2)
    axes = fig.subplots(2, 3)
    panels = [
        (axes[0, 0], "train_loss", "training loss"),
        (axes[0, 1], "val_loss", "validation loss"),
        (axes[1, 0], "train_acc", "training accuracy"),
        (axes[1, 1], "val_acc", "validation accuracy"),
        (axes[0, 2], "lr", "learning rate (at the start of the epoch)"),
    ]
    color = model_color(model)
    handles: list[Line2D] = []
    labels: list[str] = []
    lrs: list[float] = []
    for run in model_runs:
        rows = [r for r in run.metrics if "epoch" in r]
        if not rows:
            continue
        style = optimizer_style(run.optimizer)
        epochs = [r["epoch"] for r in rows]
        for ax, key, _ in panels:
            ys: list[Any] = [r.get(key) for r in rows]
            if any(not _number(v) for v in ys):
                continue
            ax.plot(epochs, ys, color=color, linewidth=1.8, markersize=4, **style)
            if key == "lr":
                lrs.extend(ys)
        handles.append(Line2D([], [], color=color, linewidth=1.8, markersize=5, **style))
        labels.append(_training_label(run))
    for ax, key, title in panels:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if key.endswith("acc"):
            # Autoscaled, not [0, 1]: differences near 1 stay visible.
            ax.set_ylim(top=min(1.02, ax.get_ylim()[1]))
    positive = [v for v in lrs if v > 0]
    if positive and max(positive) / min(positive) > 10:
        axes[0, 2].set_yscale("log")  # optimizers' rates differ by orders of magnitude
    legend_ax = axes[1, 2]
    legend_ax.axis("off")
    if handles:
        legend_ax.legend(
            handles,
            labels,
            loc="center",
            fontsize=9,
            title="run (optimizer, schedule)",
            title_fontsize=9,
            frameon=False,
        )
    else:
        legend_ax.text(0.5, 0.5, "no completed epochs yet", ha="center", va="center")
    fig.suptitle(f"Training of {model}: losses, accuracies and learning-rate schedule", fontsize=12)
    return fig


def _training_label(run: ReportRun) -> str:
    sched = run.config.get("schedule") or {}
    parts = [run.optimizer]
    if run.config.get("optimizer", {}).get("lr") is not None:
        parts.append(f"lr {run.config['optimizer']['lr']:g}")
    if sched.get("name"):
        warm = sched.get("warmup_epochs") or 0
        parts.append(f"{sched['name']}" + (f" + {warm} warm-up" if warm else ""))
    unfinished = "" if run.summary is not None else ", unfinished"
    return f"{run.name}\n({', '.join(parts)}{unfinished})"


# --- tables -------------------------------------------------------------------

CSV_COLUMNS = (
    "run",
    "model",
    "optimizer",
    "dataset",
    "test_accuracy",
    "attack",
    "norm",
    "target",
    "loss",
    "steps",
    "restarts",
    "n_samples",
    "clean_accuracy",
    "epsilons",
    "accuracy",
    "success_rate",
    "eps_chosen",
    "accuracy_at_eps_chosen",
    "interpolated",
    "auc",
    "seconds",
    "record",
)
"""Columns of summary.csv; list-valued cells are ``;``-joined, numbers verbatim."""


def _exact(value: Any) -> str:
    """A JSON value as text that parses back to the same value (repr of floats)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return ";".join(_exact(v) for v in value)
    return str(value)


def _summary_rows(
    report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]
) -> list[dict[str, Any]]:
    """One row per run x attack record, raw values (formatting happens per output)."""
    rows = []
    for run in report_runs:
        for rec in sorted(run.records, key=lambda r: (r.setting.sort_key(), r.name)):
            s, c = rec.settings, rec.curve
            choice = chosen.get(s["norm"])
            value, interp = value_at(c, choice.eps) if choice else (None, False)
            rows.append(
                {
                    "run": run.name,
                    "model": run.model,
                    "optimizer": run.optimizer,
                    "dataset": run.dataset,
                    "test_accuracy": (run.summary or {}).get("test_accuracy"),
                    "attack": s["attack"],
                    "norm": s["norm"],
                    "target": target_slug(s.get("target")).removeprefix("target-"),
                    "loss": s.get("loss") or "ce",
                    "steps": s.get("steps") if s["attack"] == "pgd" else None,
                    "restarts": s.get("restarts") if s["attack"] == "pgd" else None,
                    "n_samples": c.get("n_samples"),
                    "clean_accuracy": c["clean_accuracy"],
                    "epsilons": c["epsilons"],
                    "accuracy": c["accuracy"],
                    "success_rate": c["success_rate"],
                    "eps_chosen": choice.eps if choice else None,
                    "accuracy_at_eps_chosen": value,
                    "interpolated": "yes" if interp else "no",
                    "auc": area_under_curve(c),
                    "seconds": c.get("seconds"),
                    "record": str(rec.path),
                    "_setting": rec.setting,
                }
            )
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_exact(row[k]) for k in CSV_COLUMNS])
    return buf.getvalue()


_MD_COLUMNS = (
    ("run", "run"),
    ("model", "model"),
    ("optimizer", "optimizer"),
    ("dataset", "dataset"),
    ("attack", "attack"),
    ("norm", "norm"),
    ("target", "target"),
    ("loss", "loss"),
    ("steps", "steps"),
    ("clean_accuracy", "clean acc"),
    ("accuracy_at_eps_chosen", "acc at ε*"),
    ("auc", "AUC"),
    ("seconds", "attack seconds"),
    ("curve", "accuracy per ε"),
)


def _cell_text(row: dict[str, Any], key: str) -> str:
    """A table cell for humans: fixed decimals, ``≈`` for an interpolated value."""
    if key == "accuracy_at_eps_chosen":
        if row["eps_chosen"] is None:
            return "—"
        mark = "≈" if row["interpolated"] == "yes" else ""
        return f"{mark}{fmt(row[key])} (ε={_eps(row['eps_chosen'])})"
    if key in ("clean_accuracy", "auc", "test_accuracy"):
        return fmt(row[key])
    if key == "seconds":
        return fmt(row[key], 1)
    if key == "curve":
        return ", ".join(
            f"{_eps(e)}: {fmt(a)}" for e, a in zip(row["epsilons"], row["accuracy"], strict=True)
        )
    if key == "steps":
        return "—" if row[key] is None else str(row[key])
    return str(row[key])


def _md_text(
    report_runs: Sequence[ReportRun],
    rows: list[dict[str, Any]],
    chosen: dict[str, EpsChoice],
    notes: list[str],
) -> str:
    lines = [
        "# advkit report",
        "",
        f"{len(report_runs)} runs, {len(rows)} attack records. "
        f"Accuracies with {DECIMALS} decimals, exactly as in the runs' JSON files; "
        "AUC is the area under accuracy vs ε over [0, largest ε] divided by that ε; "
        "≈ marks a value interpolated linearly between the two nearest budgets.",
        "",
    ]
    for choice in chosen.values():
        lines.append(
            f"- ε* ({NORM_NAMES.get(choice.norm, choice.norm)}) = {_eps(choice.eps)}: {choice.how}"
        )
    lines.append("")
    lines.append("| " + " | ".join(title for _, title in _MD_COLUMNS) + " |")
    lines.append(
        "|"
        + "|".join(
            "---:"
            if k in ("clean_accuracy", "accuracy_at_eps_chosen", "auc", "seconds", "steps")
            else "---"
            for k, _ in _MD_COLUMNS
        )
        + "|"
    )
    for row in rows:
        lines.append(
            "| " + " | ".join(_md_escape(_cell_text(row, k)) for k, _ in _MD_COLUMNS) + " |"
        )
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --- the report -------------------------------------------------------------------


@dataclass
class _Task:
    file: str
    section: str  # comparison, curves, training, gallery
    caption: str
    build: Callable[[], Figure]
    run: str | None = None


def _unique_names(report_runs: list[ReportRun]) -> None:
    """Give runs with the same directory name distinct names (parent-name)."""
    seen: dict[str, int] = {}
    for run in report_runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in report_runs:
        if seen[run.name] > 1:
            run.name = f"{run.path.parent.name}-{run.path.name}"
    taken: set[str] = set()
    for run in report_runs:
        base, k = run.name, 2
        while run.name in taken:
            run.name, k = f"{base}-{k}", k + 1
        taken.add(run.name)


def _plan(report_runs: list[ReportRun], chosen: dict[str, EpsChoice]) -> list[_Task]:
    tasks: list[_Task] = []
    if chosen and any(r.records for r in report_runs):
        tasks.append(
            _Task(
                "comparison.png",
                "comparison",
                "Robust accuracy at ε* and area under the curve, models × optimizers.",
                partial(comparison_figure, report_runs, chosen),
            )
        )
    groups: dict[Setting, list[tuple[ReportRun, AttackRecord]]] = {}
    for run in report_runs:
        for rec in run.records:
            groups.setdefault(rec.setting, []).append((run, rec))
    for setting in sorted(groups, key=Setting.sort_key):
        entries = groups[setting]
        tasks.append(
            _Task(
                f"curves-{setting.slug}.png",
                "curves",
                setting.title,
                partial(robustness_figure, setting, entries, chosen.get(setting.norm)),
            )
        )
    by_model: dict[str, list[ReportRun]] = {}
    for run in report_runs:
        by_model.setdefault(run.model, []).append(run)
    for model in _ordered(set(by_model), MODEL_ORDER):
        model_runs = sorted(
            by_model[model], key=lambda r: (_rank(r.optimizer, OPTIMIZER_ORDER), r.name)
        )
        tasks.append(
            _Task(
                f"training-{_safe(model)}.png",
                "training",
                f"Training of {model}",
                partial(training_figure, model, model_runs),
            )
        )
    for model in _ordered(set(by_model), MODEL_ORDER):
        run = _gallery_run(by_model[model])
        if run is None:
            continue
        for rec in _gallery_records(run):
            tasks.append(
                _Task(
                    f"gallery-{_safe(run.name)}-{_safe(rec.name)}.png",
                    "gallery",
                    rec.setting.title,
                    partial(gallery_figure, run, rec),
                    run=run.name,
                )
            )
    return tasks


def _gallery_run(model_runs: list[ReportRun]) -> ReportRun | None:
    """The run whose examples stand for its model: the most accurate one with examples."""
    shown = [r for r in model_runs if any(rec.examples is not None for rec in r.records)]
    if not shown:
        return None
    return max(shown, key=lambda r: ((r.summary or {}).get("test_accuracy", 0.0), r.name))


def _gallery_records(run: ReportRun) -> list[AttackRecord]:
    """The strongest attack of each norm and target mode (PGD where there is one)."""
    best: dict[tuple, AttackRecord] = {}
    for rec in sorted(run.records, key=lambda r: (r.setting.sort_key(), r.name)):
        if rec.examples is None:
            continue
        key = (rec.setting.norm, rec.setting.target, rec.setting.loss)
        if key not in best or _rank(rec.setting.attack, ("pgd", "fgsm")) < _rank(
            best[key].setting.attack, ("pgd", "fgsm")
        ):
            best[key] = rec
    return sorted(best.values(), key=lambda r: (r.setting.sort_key(), r.name))


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    eps_linf: float | None = None,
    eps_l2: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Write a report on ``run_dirs`` into ``out``: figures, index.html, summary.csv/md.

    Everything is read and checked before anything is written, and every file
    is written atomically, so a bad input writes nothing and an interruption
    leaves only complete files. PNGs in ``out/figures`` that this report did not
    write (left by an older report) are removed at the end.

    Args:
        run_dirs: run directories, or directories holding runs.
        out: the report directory (created if needed).
        eps_linf: the L∞ budget at which robust accuracies are compared;
            None picks the middle of the budgets all runs share.
        eps_l2: the same for L2.
        progress: called as ``progress(done, total, file)`` before the first
            and after each figure.

    Returns:
        ``{"out", "index", "csv", "markdown", "figures", "runs", "records",
        "eps", "notes", "table"}``: paths written, counts, the chosen budgets,
        per-run notes and per-run headline numbers (``table``).

    Raises:
        ValueError: no runs, a bad eps, an ``out`` that is a file or a run;
            RunError (a ValueError) for a path that is not a run or a corrupt
            file, naming it.
    """
    given = {"linf": eps_linf, "l2": eps_l2}
    for norm, value in given.items():
        if value is not None and not (_number(value) and value > 0):
            raise ValueError(f"eps_{norm} must be a finite number > 0, got {value!r}")
    if not run_dirs:
        raise ValueError("no run directories given")
    report_runs = [load_report_run(p) for p in find_runs(run_dirs)]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    if _is_run(out):
        raise ValueError(f"--out {str(out)!r} is a run directory; write the report elsewhere")
    _unique_names(report_runs)
    chosen = choose_eps(report_runs, given)
    notes = [f"{run.name}: {note}" for run in report_runs for note in run.notes]
    for norm, value in given.items():
        if value is not None and norm not in chosen:
            notes.append(
                f"--eps-{norm} {_eps(value)} ignored: no run has an {NORM_NAMES[norm]} attack"
            )
    rows = _summary_rows(report_runs, chosen)
    for choice in chosen.values():
        beyond = [
            r for r in rows if r["norm"] == choice.norm and r["accuracy_at_eps_chosen"] is None
        ]
        if beyond:
            notes.append(
                f"ε* = {_eps(choice.eps)} ({NORM_NAMES.get(choice.norm, choice.norm)}) lies beyond "
                f"the largest budget of {len(beyond)} attack records: shown as — (never extrapolated)"
            )
    tasks = _plan(report_runs, chosen)

    figures_dir = out / "figures"
    written: list[Path] = []
    if progress is not None:
        progress(0, len(tasks), "")
    for i, task in enumerate(tasks, 1):
        fig = task.build()
        written.append(save_figure(fig, figures_dir / task.file))
        if progress is not None:
            progress(i, len(tasks), task.file)

    runs.write_text(out / "summary.csv", _csv_text(rows))
    runs.write_text(out / "summary.md", _md_text(report_runs, rows, chosen, notes))
    table = _headline(report_runs, chosen)
    runs.write_text(out / "index.html", _html(report_runs, rows, chosen, tasks, table, notes))
    keep = {p.name for p in written}
    for stale in figures_dir.glob("*.png") if figures_dir.is_dir() else []:
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return {
        "out": out,
        "index": out / "index.html",
        "csv": out / "summary.csv",
        "markdown": out / "summary.md",
        "figures": written,
        "runs": len(report_runs),
        "records": len(rows),
        "eps": {norm: c.eps for norm, c in chosen.items()},
        "notes": notes,
        "table": table,
    }


def _headline(
    report_runs: Sequence[ReportRun], chosen: dict[str, EpsChoice]
) -> list[dict[str, Any]]:
    """Per run: test accuracy and, per norm, the strongest untargeted attack's numbers."""
    table = []
    for run in report_runs:
        robust = {}
        for norm, choice in chosen.items():
            rec = strongest_record(run, norm)
            if rec is None:
                continue
            value, interp = value_at(rec.curve, choice.eps)
            robust[norm] = {
                "eps": choice.eps,
                "accuracy": value,
                "interpolated": interp,
                "auc": area_under_curve(rec.curve),
                "attack": _attack_short(rec),
            }
        table.append(
            {
                "run": run.name,
                "model": run.model,
                "optimizer": run.optimizer,
                "dataset": run.dataset,
                "test_accuracy": (run.summary or {}).get("test_accuracy"),
                "seconds": (run.summary or {}).get("seconds"),
                "epochs": len(run.metrics),
                "robust": robust,
            }
        )
    return table


# --- HTML ----------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 64px; background: white; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin-top: 40px; padding-bottom: 4px; border-bottom: 2px solid #e5e5e5; font-size: 21px; }
h3 { font-size: 16px; margin: 24px 0 6px; }
p, li { line-height: 1.5; max-width: 950px; }
.meta { color: #666; margin: 0 0 12px; }
nav { background: #f3f4f6; padding: 8px 14px; border-radius: 6px; margin: 14px 0; }
nav a { margin-right: 16px; color: #0b5cad; text-decoration: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 4px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th { background: #f3f4f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfbfc; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
details { margin: 8px 0; border: 1px solid #e5e5e5; border-radius: 6px; padding: 6px 12px; }
summary { cursor: pointer; font-weight: 600; }
.notes { background: #fff8e6; border-left: 4px solid #f0b400; padding: 8px 16px; }
td.wrap { white-space: normal; min-width: 15em; }
.gallery figure { margin: 10px 0 18px; }
footer { color: #888; font-size: 12px; margin-top: 40px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _figure_html(task: _Task) -> str:
    src = f"figures/{task.file}"
    return (
        f'<figure><a href="{_e(src)}"><img src="{_e(src)}" alt="{_e(task.caption)}" loading="lazy"></a>'
        f"<figcaption>{_e(task.caption)}</figcaption></figure>"
    )


def _swatch(model: str) -> str:
    return f'<span class="swatch" style="background:{model_color(model)}"></span>{_e(model)}'


def _results_table(
    table: list[dict[str, Any]], rows: list[dict[str, Any]], chosen: dict[str, EpsChoice]
) -> str:
    settings = sorted({row["_setting"] for row in rows}, key=Setting.sort_key)
    by_run_setting: dict[tuple[str, Setting], dict[str, Any]] = {}
    for row in rows:
        by_run_setting.setdefault((row["run"], row["_setting"]), row)  # first record of a setting
    norms = [n for n in chosen if any(n in t["robust"] for t in table)]
    head = ["run", "model", "optimizer", "dataset", "epochs", "test accuracy"]
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    for s in settings:
        out.append(
            f"<th>{_e(s.title)}<br>acc at ε = {_e(_eps(chosen[s.norm].eps)) if s.norm in chosen else '—'}</th>"
        )
    for n in norms:
        out.append(
            f"<th>AUC {_e(NORM_NAMES.get(n, n))}<br><small>strongest untargeted</small></th>"
        )
    out.append("<th>training time</th></tr></thead><tbody>")
    for t in table:
        cells = [
            f"<td>{_e(t['run'])}</td>",
            f"<td>{_swatch(t['model'])}</td>",
            f"<td>{_e(t['optimizer'])}</td>",
            f"<td>{_e(t['dataset'])}</td>",
            f'<td class="num">{t["epochs"]}</td>',
            f'<td class="num">{fmt(t["test_accuracy"])}</td>',
        ]
        for s in settings:
            found = by_run_setting.get((t["run"], s))
            cells.append(f'<td class="num">{_e(_short_value(found)) if found else "—"}</td>')
        for n in norms:
            r = t["robust"].get(n)
            cells.append(f'<td class="num">{fmt(r["auc"]) if r else "—"}</td>')
        secs = t["seconds"]
        cells.append(f'<td class="num">{"—" if secs is None else f"{secs:.1f} s"}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _short_value(row: dict[str, Any]) -> str:
    if row["eps_chosen"] is None:
        return "—"
    return ("≈" if row["interpolated"] == "yes" else "") + fmt(row["accuracy_at_eps_chosen"])


_CELL_CLASS = {
    **dict.fromkeys(
        ("clean_accuracy", "accuracy_at_eps_chosen", "auc", "seconds", "steps"), ' class="num"'
    ),
    "curve": ' class="wrap"',
}


def _all_curves_table(rows: list[dict[str, Any]]) -> str:
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f"<th>{_e(title)}</th>" for _, title in _MD_COLUMNS]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append(
            "<tr>"
            + "".join(
                f"<td{_CELL_CLASS.get(k, '')}>{_e(_cell_text(row, k))}</td>" for k, _ in _MD_COLUMNS
            )
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def _section(tasks: list[_Task], name: str) -> list[_Task]:
    return [t for t in tasks if t.section == name]


def _html(
    report_runs: Sequence[ReportRun],
    rows: list[dict[str, Any]],
    chosen: dict[str, EpsChoice],
    tasks: list[_Task],
    table: list[dict[str, Any]],
    notes: list[str],
) -> str:
    datasets = sorted({r.dataset for r in report_runs})
    models = _ordered({r.model for r in report_runs}, MODEL_ORDER)
    optimizers = _ordered({r.optimizer for r in report_runs}, OPTIMIZER_ORDER)
    p: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>advkit report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>advkit robustness report</h1>",
        f'<p class="meta">{len(report_runs)} runs ({_e(", ".join(models))} × {_e(", ".join(optimizers))}) '
        f"on {_e(', '.join(datasets))}; {len(rows)} attack records. "
        f'Numbers: <a href="summary.csv">summary.csv</a>, <a href="summary.md">summary.md</a>.</p>',
        '<nav><a href="#results">Results</a><a href="#comparison">Models × optimizers</a>'
        '<a href="#curves">Robustness curves</a><a href="#training">Training</a>'
        '<a href="#examples">Adversarial examples</a><a href="#all">All curves</a></nav>',
        '<h2 id="results">Results</h2>',
        "<p>Each run is a model trained with one optimizer. <b>Test accuracy</b> is on clean test "
        "images. <b>Accuracy at ε</b> is the fraction of attacked test samples still classified "
        "correctly when the attacker may change every image by at most ε (pixel values lie in "
        "[0, 1], so ε = 0.1 in L∞ means each pixel moves by at most 10% of its range). "
        "<b>AUC</b> is the area under the accuracy-vs-ε curve divided by the largest ε: 1 means "
        "no accuracy lost on the whole grid. All numbers are copied from the runs' JSON files "
        f"with {DECIMALS} decimals; ≈ marks a value interpolated linearly between the two nearest "
        "budgets of a run's grid.</p>",
    ]
    if chosen:
        p.append("<ul>")
        for c in chosen.values():
            p.append(
                f"<li>ε* for {_e(NORM_NAMES.get(c.norm, c.norm))} = <b>{_e(_eps(c.eps))}</b>: {_e(c.how)}.</li>"
            )
        p.append("</ul>")
    p.append(_results_table(table, rows, chosen))
    if notes:
        p.append(
            '<div class="notes"><b>Notes</b><ul>'
            + "".join(f"<li>{_e(n)}</li>" for n in notes)
            + "</ul></div>"
        )

    p.append('<h2 id="comparison">Models × optimizers</h2>')
    comparison = _section(tasks, "comparison")
    if comparison:
        p.append(
            "<p>For each run, its strongest untargeted attack (PGD if there is one, with the most "
            "steps). Top: robust accuracy at ε*; bottom: the area under the whole curve. Rows are "
            "models, columns optimizers; a dash means that pair was not trained or not attacked. "
            "Brighter is more robust.</p>"
        )
        p += [_figure_html(t) for t in comparison]
    else:
        p.append("<p>No attacks yet: run <code>advkit attack RUN</code> on the runs first.</p>")

    p.append('<h2 id="curves">Robustness curves</h2>')
    p.append(
        "<p>One figure per attack setting (attack × norm × targeted or not), one line per run. "
        "Left: accuracy under attack against the budget ε; at ε = 0 it is the clean accuracy. "
        "Right: the attack's success rate (untargeted: misclassified; targeted: classified as "
        "the target class). Budgets are nested, so the curves never rise. Colour is the model "
        "and line style the optimizer, the same in every figure: "
        + ", ".join(_swatch(m) for m in models)
        + ".</p>"
    )
    p += [_figure_html(t) for t in _section(tasks, "curves")] or ["<p>No attacks yet.</p>"]

    p.append('<h2 id="training">Training curves</h2>')
    p.append(
        "<p>Per model: training and validation loss and accuracy per epoch, and the learning "
        "rate each epoch started with, so warm-up (a rising start) and decay (step drops, "
        "exponential or cosine fall) are visible. Line style is the optimizer.</p>"
    )
    p += [_figure_html(t) for t in _section(tasks, "training")]

    p.append('<h2 id="examples">Adversarial examples</h2>')
    p.append(
        "<p>Test images (top), the same images attacked (middle) and the perturbation between "
        "them (bottom), amplified by the factor written on the left so that it fills the grey "
        "range (mid grey = no change). Above each image: the predicted class and the model's "
        "confidence, green when right and red when wrong; for targeted attacks, the target. The "
        "change is barely visible to a person, yet it flips the model's decision.</p>"
    )
    galleries = _section(tasks, "gallery")
    if not galleries:
        p.append("<p>No examples yet.</p>")
    for i, run in enumerate(report_runs):
        mine = [t for t in galleries if t.run == run.name]
        if not mine:
            continue
        p.append(
            f"<details{' open' if i == 0 else ''}><summary>{_e(run.label)} ({len(mine)} attacks)</summary>"
        )
        p.append(
            '<div class="gallery">' + "".join(_figure_html(t) for t in mine) + "</div></details>"
        )

    p.append('<h2 id="all">All curves</h2>')
    p.append(
        '<p>Every attack record, one row each (as in <a href="summary.md">summary.md</a>; '
        '<a href="summary.csv">summary.csv</a> holds the JSON numbers verbatim).</p>'
    )
    p.append(_all_curves_table(rows) if rows else "<p>No attacks yet.</p>")
    p.append(
        f"<footer>advkit {_e(__version__)} · runs: {_e(', '.join(str(r.path) for r in report_runs))}</footer>"
    )
    p.append("</main></body></html>")
    return "\n".join(p) + "\n"
