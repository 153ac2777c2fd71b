"""Attacks suite: PGD and FGSM against one forward+backward; whole curves against from scratch.

On the digits test set with the MLP and BN-CNN trained by advkit's default
recipe. What each row means is written in BENCHMARKS.md, section Attacks.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

import attacks
import models
from advkit import load_run, robustness_curve
from advkit.data import load_dataset
from advkit.train import TrainConfig, train

from .harness import Row, Section, interleaved, log, markdown_table, ratios, synchronizer

EVEN_LINF = tuple(round(0.3 * i / 7, 10) for i in range(8))  # `advkit attack --eps 0:0.3:8`
EPSILONS = {"linf": EVEN_LINF, "l2": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)}
DENSE_LOW_LINF = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)  # dense where models are robust
STEP_EPS = {"linf": 0.1, "l2": 1.0}  # mid-range: most samples are still attacked
PEERS = {"linf": torchattacks.PGD, "l2": torchattacks.PGDL2}


@dataclass
class Settings:
    """Sizes of the attacks suite (`train_epochs=None`: advkit's default recipe; `samples=None`:
    the whole digits test set; `dense_low=None` skips that grid; `fixed_start` adds the curves
    with `random_start=False`)."""

    models: tuple[str, ...] = ("mlp", "bncnn")
    norms: tuple[str, ...] = ("linf", "l2")
    train_epochs: int | None = None
    samples: int | None = None
    steps: int = 20
    repeats: int = 3
    step_repeats: int = 5
    step_budget: float = 4.0
    fgsm_calls: int = 5
    epsilons: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(EPSILONS))
    dense_low: tuple[float, ...] | None = DENSE_LOW_LINF
    fixed_start: bool = True
    batch_size: int = 256

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            train_epochs=3,
            samples=120,
            steps=10,
            step_repeats=3,
            step_budget=1.0,
            epsilons={norm: eps[::2] for norm, eps in EPSILONS.items()},
            dense_low=DENSE_LOW_LINF[::2],
        )


def trained_models(s: Settings, device: torch.device) -> tuple[dict[str, nn.Module], str]:
    """Each model trained on digits through `advkit.train.train`, and a line with their accuracy."""
    data, found, accuracy = load_dataset("digits"), {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in s.models:
            log(f"training {name} ({s.train_epochs or models.DEFAULT_EPOCHS[name]} epochs)")
            config = TrainConfig(model=name, epochs=s.train_epochs)
            summary = train(config, Path(tmp) / name, dataset=data, device=device)
            found[name], _ = load_run(Path(tmp) / name, device=device)
            accuracy.append(f"{name} test accuracy {summary['test_accuracy']:.3f}")
    recipe = "advkit's default recipe" if s.train_epochs is None else f"{s.train_epochs} epochs"
    return found, f"Models trained on digits ({recipe}): {', '.join(accuracy)}."


def step_rows(name: str, model: nn.Module, x, y, s: Settings, device: torch.device) -> list[Row]:
    """PGD per step and FGSM, on the model as loaded, against forward+backward on a frozen copy."""
    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def floor(k: int) -> None:
        for _ in range(k):
            point = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(frozen(point), y, reduction="sum"), point)

    rows = []
    for norm in s.norms:
        eps = STEP_EPS[norm]
        log(f"  {name} {norm}: PGD-{s.steps} and FGSM against forward+backward")

        def pgd(k: int, norm: str = norm, eps: float = eps) -> None:
            attacks.pgd(model, x, y, eps, norm=norm, steps=k)

        def fgsm(k: int, norm: str = norm, eps: float = eps) -> None:
            for _ in range(k):
                attacks.fgsm(model, x, y, eps, norm=norm)

        timing = {"repeats": s.step_repeats, "sync": synchronizer(device)}
        t = interleaved(
            {"floor": lambda: floor(s.steps), "pgd": lambda: pgd(s.steps)},
            budget=s.step_budget,
            warmup={"floor": lambda: floor(2), "pgd": lambda: pgd(2)},
            **timing,
        )
        per_step = Row(
            f"PGD-{s.steps} per step, {name}, {norm} eps={eps:g}",
            [v / s.steps for v in t["pgd"]],
            ratios=ratios(t["pgd"], t["floor"]),
            target=("<=", 1.10),
            note="ratio: / one forward+backward wrt x, params frozen",
        )
        n = s.fgsm_calls
        t = interleaved(
            {"floor": lambda n=n: floor(n), "fgsm": lambda n=n: fgsm(n)},
            budget=s.step_budget / 2,
            warmup={"floor": lambda: floor(1), "fgsm": lambda: fgsm(1)},
            **timing,
        )
        fgsm_row = Row(f"FGSM, {name}, {norm} eps={eps:g}", [v / n for v in t["fgsm"]])
        fgsm_row.ratios, fgsm_row.note = (
            ratios(t["fgsm"], t["floor"]),
            "ratio: / one forward+backward",
        )
        floor_row = Row(
            f"floor: one forward+backward, {name}, {len(x)} samples", [v / n for v in t["floor"]]
        )
        rows += [per_step, fgsm_row, floor_row]
    return rows


def peer_curve(model, x, y, c: Curves, steps: int, batch_size: int, seed: int) -> list[float]:
    """Robust accuracy per eps with torchattacks, every eps from scratch, advkit's step size.

    torchattacks draws its starts from the global generator: seeded inside `fork_rng`.
    """
    accuracy = []
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for eps in c.epsilons:
            correct = 0
            for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
                if eps > 0:
                    xb = PEERS[c.norm](model, eps=eps, alpha=2.5 * eps / steps, steps=steps)(xb, yb)
                with torch.no_grad():
                    correct += int((model(xb).argmax(dim=1) == yb).sum())
            accuracy.append(correct / len(x))
    return accuracy


@dataclass
class Curves:
    """One curve comparison: a norm, its budgets, the grid's name, and PGD's random start."""

    norm: str
    epsilons: tuple[float, ...]
    grid: str = ""
    random_start: bool = True

    @property
    def label(self) -> str:
        start = "" if self.random_start else ", random_start=False"
        return f"{self.norm}{' ' + self.grid if self.grid else ''}{start}"


def curve_settings(s: Settings) -> list[Curves]:
    """Per norm its headline grid (L-inf: even, then dense-low), then again without random start."""
    todo = []
    for norm in s.norms:
        todo.append(Curves(norm, s.epsilons[norm], "even grid" if norm == "linf" else ""))
        if norm == "linf" and s.dense_low is not None:
            todo.append(Curves(norm, s.dense_low, "dense-low grid"))
    fixed = [replace(c, random_start=False) for c in todo if c.grid != "dense-low grid"]
    return todo + (fixed if s.fixed_start else [])


def curve_rows(name, model, x, y, c: Curves, s: Settings, device) -> tuple[list[Row], str]:
    """Incremental against from scratch (advkit, and torchattacks with random starts); round r
    uses seed r. The work: samples through grad-enabled forward passes, counted by a hook."""
    log(f"  {name} {c.label}: curves over {len(c.epsilons)} epsilons, PGD-{s.steps}")
    keys = ["incremental", "scratch"] + (["peer"] if c.random_start else [])
    found: dict[str, list[list[float]]] = {key: [] for key in keys}
    work: dict[str, list[float]] = {key: [] for key in keys}
    passes = [0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        passes[0] += len(inputs[0]) if torch.is_grad_enabled() else 0

    def curve(key: str, xs: torch.Tensor, ys: torch.Tensor) -> None:
        seed, before = len(found[key]), passes[0]
        if key == "peer":
            accuracy = peer_curve(model, xs, ys, c, s.steps, s.batch_size, seed)
        else:
            accuracy = robustness_curve(
                model, xs, ys, c.epsilons, norm=c.norm, batch_size=s.batch_size, seed=seed,
                incremental=key == "incremental", steps=s.steps, random_start=c.random_start,
            ).accuracy  # fmt: skip
        if len(xs) == len(x):  # not the warm-up
            found[key].append(accuracy)
            work[key].append(float(passes[0] - before))

    few = slice(0, min(32, len(x)))  # warm-up on a few samples: cheap, same code paths
    handle = model.register_forward_hook(count)
    try:
        t = interleaved(
            {key: lambda key=key: curve(key, x, y) for key in keys},
            repeats=s.repeats,
            warmup={key: lambda key=key: curve(key, x[few], y[few]) for key in keys},
            sync=synchronizer(device),
        )
    finally:
        handle.remove()
    what = f"curve {len(c.epsilons)} eps PGD-{s.steps}, {name}, {c.label}"
    work_ratio = ratios(work["incremental"], work["scratch"])
    rows = [
        Row(f"{what}: advkit incremental", t["incremental"],
            ratios=ratios(t["incremental"], t["scratch"]),
            target=("<=", 0.5) if c.random_start else None,
            note=f"ratio: / advkit from scratch; work ratio {statistics.median(work_ratio):.3f}"),
        Row(f"{what}: attack forward+backward sample-passes, incremental", work["incremental"],
            unit="count", ratios=work_ratio,
            note="ratio: / from scratch (the work ratio), the floor of the time ratio"),
        Row(f"{what}: advkit from scratch", t["scratch"]),
    ]  # fmt: skip
    if c.random_start:
        peer = "ratio: / torchattacks from scratch"
        rows.insert(1, Row(f"{what}: advkit incremental", t["incremental"], target=("<=", 0.5),
                           ratios=ratios(t["incremental"], t["peer"]), note=peer))  # fmt: skip
        rows[-1].ratios, rows[-1].note = ratios(t["scratch"], t["peer"]), peer
        rows.append(Row(f"{what}: torchattacks from scratch", t["peer"]))
    return rows, accuracy_table(f"{name}, {c.label}", c.epsilons, found, len(x))


def _cell(values: Sequence[float]) -> str:
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:.3f}" if low == high else f"{median:.3f} ({low:.3f}-{high:.3f})"


def accuracy_table(title: str, epsilons: Sequence[float], found: dict, n: int) -> str:
    """Robust accuracy per eps (median, min-max over rounds); incremental - scratch per round."""
    rows, violations = [], 0
    for i, eps in enumerate(epsilons):
        column = {key: [run[i] for run in runs] for key, runs in found.items()}
        diffs = [
            round((a - b) * n)
            for a, b in zip(column["incremental"], column["scratch"], strict=True)
        ]
        worse = sum(d > 0 for d in diffs)
        violations += worse
        rows.append(
            [f"{eps:g}", *(_cell(v) for v in column.values())]
            + ["yes" if not worse else f"**no** in {worse} of {len(diffs)}"]
            + [", ".join(f"{d:+d}" for d in diffs)]
        )
    names = {"incremental": "advkit incremental", "scratch": "advkit from scratch"}
    names["peer"] = "torchattacks from scratch"
    head = ["eps", *(names[key] for key in found), "incremental <= from scratch (rounds)"]
    head.append("incremental - from scratch, samples per round")
    summary = (
        "incremental <= from scratch at every eps in every round"
        if not violations
        else f"**incremental > from scratch in {violations} of "
        f"{len(epsilons) * len(found['scratch'])} (eps, round) pairs**"
    )
    return f"Robust accuracy, {title}, {n} samples ({summary}):\n\n" + markdown_table(head, rows)


def bench(s: Settings, device: torch.device) -> list[Section]:
    """Train the models, then time the steps and the curves; one section each."""
    trained, trained_line = trained_models(s, device)
    data = load_dataset("digits")
    x, y = data.x_test[: s.samples].to(device), data.y_test[: s.samples].to(device)
    steps = Section(f"PGD and FGSM against one forward+backward ({len(x)} digits)")
    curves = Section(f"Whole robustness curves ({len(x)} digits)")
    grids = "; ".join(f"{c.label} {list(c.epsilons)}" for c in curve_settings(s) if c.random_start)
    curves.extra.append(
        f"{trained_line} PGD-{s.steps}, batches of {s.batch_size}. Epsilons: {grids}."
    )
    steps.extra.append(trained_line)
    for name, model in trained.items():
        steps.rows += step_rows(name, model, x, y, s, device)
    for name, model in trained.items():
        for c in curve_settings(s):
            rows, table = curve_rows(name, model, x, y, c, s, device)
            curves.rows += rows
            curves.extra.append(table)
    return [steps, curves]


def suite(device: torch.device, quick: bool) -> list[Section]:
    return bench(Settings.quick() if quick else Settings(), device)
