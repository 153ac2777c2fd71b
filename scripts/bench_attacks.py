"""Attack benchmark (issue 3): PGD and FGSM against the forward+backward floor, and whole curves.

On the digits test set (360 samples) with the digits MLP and BN-CNN, trained
first with advkit's default recipe:

1. PGD time per step / one forward+backward with respect to the input (the
   floor, with the parameters frozen), L-inf and L2 (target <= 1.10); FGSM
   time / one forward+backward.
2. A whole robustness curve of 8 epsilons with PGD-20: `robustness_curve`
   (incremental, the default) against `robustness_curve(incremental=False)`
   and torchattacks' PGD / PGDL2, both attacking every eps from scratch
   (target <= 0.5x their time), with the robust accuracies side by side, and
   the work ratio (samples through the attack's forward+backward passes).
   L-inf on two grids: the even one `--eps 0:0.3:8` gives (the headline) and
   one dense at small budgets. Then both advkit curves again with
   `random_start=False`, where incremental must not end above from scratch.

Every comparison is a median of same-round ratios (shared/BENCHMARKING.md).

    python scripts/bench_attacks.py              # about 5 minutes on 2 cores
    python scripts/bench_attacks.py --quick      # a smoke version, well under a minute
    python scripts/bench_attacks.py --device cuda --out attacks.md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import copy
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch
import torch.nn.functional as F
import torchattacks
from bench_common import (
    Row,
    Section,
    command_line,
    interleaved,
    log,
    machine_line,
    markdown_table,
    per_round,
    report,
    set_threads,
    train_digits_models,
)
from torch import nn

import attacks
from advkit.data import load_dataset
from advkit.devices import DEVICES, resolve_device
from advkit.evaluate import robustness_curve


def even_grid(spec: str) -> tuple[float, ...]:
    """The budgets `advkit attack --eps START:STOP:COUNT` runs (evenly spaced, rounded)."""
    start, stop, count = spec.split(":")
    a, b, n = float(start), float(stop), int(count)
    return tuple(round(a + (b - a) * i / (n - 1), 10) for i in range(n))


# Headline grids. L-inf: what the CLI gives for `--eps 0:0.3:8`.
EPSILONS = {
    "linf": even_grid("0:0.3:8"),
    "l2": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
}
# A second L-inf grid, dense at small budgets where the digits models are still
# robust: there incremental saves less (most samples survive to the next eps).
DENSE_LOW_LINF = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
# A mid-range budget for the per-step timing: most samples are still attacked.
STEP_EPS = {"linf": 0.1, "l2": 1.0}
PEERS = {"linf": torchattacks.PGD, "l2": torchattacks.PGDL2}


@dataclass
class AttackSettings:
    """Sizes of the attack benchmark.

    Attributes:
        models: Course models to train on digits and attack.
        norms: Norms to attack under.
        train_epochs: Training epochs; None is advkit's default recipe.
        samples: Test samples attacked; None is the whole digits test set (360).
        steps: PGD steps, for the per-step timing and the curves.
        repeats: Fewest rounds of the curve timings (each round: three curves).
        step_repeats: Fewest rounds of the per-step and FGSM timings.
        step_budget: Seconds a per-step or FGSM comparison may take; cheap
            ones get more rounds (up to 15) within it.
        fgsm_calls: FGSM calls (and single forward+backward passes) per round.
        epsilons: Per norm, the curve's headline budgets.
        dense_low: A second L-inf grid, dense at small budgets (None: skip it).
        fixed_start: Also run both advkit curves with `random_start=False`
            (on the headline grids), where incremental must not lose to from scratch.
        batch_size: Samples per attack call, for advkit and torchattacks alike.
    """

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
    def quick(cls) -> AttackSettings:
        """A smoke version: short training, fewer samples, steps and epsilons."""
        return cls(
            train_epochs=3,
            samples=120,
            steps=10,
            step_repeats=3,
            step_budget=1.0,
            epsilons={norm: eps[::2] for norm, eps in EPSILONS.items()},
            dense_low=DENSE_LOW_LINF[::2],
        )


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy with frozen parameters in eval mode: how the floor is measured."""
    floor_model = copy.deepcopy(model).eval()
    floor_model.requires_grad_(False)
    return floor_model


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward and one backward pass with respect to the input: the floor of an attack step."""
    point = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(point), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, point)
    return grad


def bench_steps(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    s: AttackSettings,
    device: torch.device,
) -> list[Row]:
    """PGD per step and FGSM against one forward+backward, per norm.

    PGD and FGSM get the model as a user hands it over (parameters requiring
    gradients); the floor runs on a frozen copy, the way an attack should run.
    """
    floor_model = frozen_copy(model)
    rows = []
    for norm in s.norms:
        eps = STEP_EPS[norm]
        log(f"  {name} {norm}: PGD-{s.steps} and FGSM against forward+backward")

        def floor(k: int) -> None:
            for _ in range(k):
                forward_backward(floor_model, x, y)

        def pgd(k: int, norm: str = norm, eps: float = eps) -> None:
            attacks.pgd(model, x, y, eps, norm=norm, steps=k)

        def fgsm(k: int, norm: str = norm, eps: float = eps) -> None:
            for _ in range(k):
                attacks.fgsm(model, x, y, eps, norm=norm)

        t = interleaved(
            {"floor": lambda: floor(s.steps), "pgd": lambda: pgd(s.steps)},
            device,
            repeats=s.step_repeats,
            budget=s.step_budget,
            warmup={"floor": lambda: floor(2), "pgd": lambda: pgd(2)},
        )
        rows.append(
            Row(
                f"PGD-{s.steps} per step, {name}, {norm} eps={eps:g}",
                [v / s.steps for v in t["pgd"]],
                ratios=per_round(t["pgd"], t["floor"]),
                target=("<=", 1.10),
                note="ratio: / one forward+backward wrt x, params frozen",
            )
        )
        t = interleaved(
            {"floor": lambda: floor(s.fgsm_calls), "fgsm": lambda: fgsm(s.fgsm_calls)},
            device,
            repeats=s.step_repeats,
            budget=s.step_budget / 2,
            warmup={"floor": lambda: floor(1), "fgsm": lambda: fgsm(1)},
        )
        rows.append(
            Row(
                f"FGSM, {name}, {norm} eps={eps:g}",
                [v / s.fgsm_calls for v in t["fgsm"]],
                ratios=per_round(t["fgsm"], t["floor"]),
                note="ratio: / one forward+backward",
            )
        )
        rows.append(
            Row(
                f"floor: one forward+backward, {name}, {len(x)} samples",
                [v / s.fgsm_calls for v in t["floor"]],
            )
        )
    return rows


def peer_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    epsilons: Sequence[float],
    steps: int,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Robust accuracy per eps with torchattacks, every eps from scratch.

    The same budgets, steps, step size `2.5 * eps / steps` and random start as
    advkit. torchattacks draws its random starts from the global generator, so
    it is seeded inside `fork_rng` to leave the caller's state alone.
    """
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    accuracy = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for eps in epsilons:
            correct = 0
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                if eps > 0:
                    peer = PEERS[norm](model, eps=eps, alpha=2.5 * eps / steps, steps=steps)
                    xb = peer(xb, yb)
                with torch.no_grad():
                    correct += int((model(xb).argmax(dim=1) == yb).sum())
            accuracy.append(correct / len(x))
    return accuracy


class PassCounter:
    """Counts the samples that go through grad-enabled forward passes (attack steps) of a model.

    The work an attack does, whatever its overheads: a curve's time cannot
    drop below its share of these passes. The hook costs one Python call per
    forward pass, the same for every attack measured.
    """

    def __init__(self, model: nn.Module) -> None:
        self.samples = 0
        self._handle = model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.samples += len(inputs[0])

    def remove(self) -> None:
        self._handle.remove()


@dataclass
class Curves:
    """One curve comparison: a norm, a grid of budgets, and how PGD starts.

    Attributes:
        norm: `"linf"` or `"l2"`.
        epsilons: The budgets.
        grid: How the grid is named in the tables ("" for none).
        random_start: PGD's `random_start`; with False, torchattacks is left out.
    """

    norm: str
    epsilons: tuple[float, ...]
    grid: str = ""
    random_start: bool = True

    @property
    def label(self) -> str:
        grid = f" {self.grid}" if self.grid else ""
        start = "" if self.random_start else ", random_start=False"
        return f"{self.norm}{grid}{start}"


def bench_curves(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    c: Curves,
    s: AttackSettings,
    device: torch.device,
) -> tuple[list[Row], str]:
    """A whole curve: incremental against from scratch (advkit, and torchattacks with random starts).

    Round r runs the curves with seed r. Returns the timing rows and a
    markdown table of the robust accuracies side by side.
    """
    log(f"  {name} {c.label}: curves over {len(c.epsilons)} epsilons, PGD-{s.steps}")
    common = {
        "norm": c.norm,
        "steps": s.steps,
        "batch_size": s.batch_size,
        "random_start": c.random_start,
    }
    keys = ["incremental", "scratch"] + (["peer"] if c.random_start else [])
    found: dict[str, list[list[float]]] = {key: [] for key in keys}
    passes: dict[str, list[int]] = {key: [] for key in keys}
    counter = PassCounter(model)

    def curve(key: str, xs: torch.Tensor, ys: torch.Tensor) -> None:
        seed = len(found[key])
        before = counter.samples
        if key == "peer":
            accuracy = peer_curve(model, xs, ys, c.norm, c.epsilons, s.steps, s.batch_size, seed)
        else:
            accuracy = robustness_curve(
                model, xs, ys, c.epsilons, seed=seed, incremental=key == "incremental", **common
            ).accuracy
        if len(xs) == len(x):  # not a warm-up
            found[key].append(accuracy)
            passes[key].append(counter.samples - before)

    few = slice(0, min(32, len(x)))  # warm-up on a few samples: cheap, same code paths
    try:
        t = interleaved(
            {key: lambda key=key: curve(key, x, y) for key in keys},
            device,
            repeats=s.repeats,
            warmup={key: lambda key=key: curve(key, x[few], y[few]) for key in keys},
        )
    finally:
        counter.remove()
    what = f"curve {len(c.epsilons)} eps PGD-{s.steps}, {name}, {c.label}"
    work = per_round(passes["incremental"], passes["scratch"])
    work_note = f"work ratio {statistics.median(work):.3f}"
    rows = [
        Row(
            f"{what}: advkit incremental",
            t["incremental"],
            ratios=per_round(t["incremental"], t["scratch"]),
            target=("<=", 0.5) if c.random_start else None,
            note=f"ratio: / advkit from scratch; {work_note}",
        ),
    ]
    if c.random_start:
        rows.append(
            Row(
                f"{what}: advkit incremental",
                t["incremental"],
                ratios=per_round(t["incremental"], t["peer"]),
                target=("<=", 0.5),
                note="ratio: / torchattacks from scratch",
            )
        )
    rows += [
        Row(
            f"{what}: attack forward+backward sample-passes, incremental",
            [float(p) for p in passes["incremental"]],
            unit="count",
            ratios=work,
            note="ratio: / from scratch (the work ratio), the floor of the time ratio",
        ),
        Row(
            f"{what}: advkit from scratch",
            t["scratch"],
            ratios=per_round(t["scratch"], t["peer"]) if c.random_start else None,
            note="ratio: / torchattacks from scratch" if c.random_start else "",
        ),
    ]
    if c.random_start:
        rows.append(Row(f"{what}: torchattacks from scratch", t["peer"]))
    return rows, accuracy_table(f"{name}, {c.label}", c.epsilons, found, len(x))


def _cell(values: Sequence[float]) -> str:
    median = statistics.median(values)
    low, high = min(values), max(values)
    return f"{median:.3f}" if low == high else f"{median:.3f} ({low:.3f}-{high:.3f})"


def accuracy_table(title: str, epsilons: Sequence[float], found: dict, n: int) -> str:
    """Robust accuracy per eps: median over rounds (min-max when they differ).

    The last columns compare incremental with from scratch round by round
    (same seed): incremental should not be higher; the difference is given in
    samples. torchattacks' column is there when `found` has its curves.
    """
    rows = []
    violations = 0
    for i, eps in enumerate(epsilons):
        columns = {key: [run[i] for run in runs] for key, runs in found.items()}
        pairs = zip(columns["incremental"], columns["scratch"], strict=True)
        differences = [round((a - b) * n) for a, b in pairs]
        worse = sum(d > 0 for d in differences)
        violations += worse
        peer = [_cell(columns["peer"])] if "peer" in columns else []
        rows.append(
            [
                f"{eps:g}",
                _cell(columns["incremental"]),
                _cell(columns["scratch"]),
                *peer,
                "yes" if not worse else f"**no** in {worse} of {len(differences)}",
                ", ".join(f"{d:+d}" for d in differences),
            ]
        )
    head = [
        "eps",
        "advkit incremental",
        "advkit from scratch",
        *(["torchattacks from scratch"] if "peer" in found else []),
        "incremental <= from scratch (rounds)",
        "incremental - from scratch, samples per round",
    ]
    pairs_total = len(epsilons) * len(found["scratch"])
    summary = (
        "incremental <= from scratch at every eps in every round"
        if not violations
        else f"**incremental > from scratch in {violations} of {pairs_total} (eps, round) pairs**"
    )
    lines = [f"Robust accuracy, {title}, {n} samples ({summary}):", "", *markdown_table(head, rows)]
    return "\n".join(lines)


def curve_settings(s: AttackSettings) -> list[Curves]:
    """The curve comparisons to run: per norm its headline grid (L-inf: the even
    grid, then the dense-low one), then the same with `random_start=False`."""
    todo = []
    for norm in s.norms:
        grid = "even grid" if norm == "linf" else ""
        todo.append(Curves(norm, s.epsilons[norm], grid))
        if norm == "linf" and s.dense_low is not None:
            todo.append(Curves(norm, s.dense_low, "dense-low grid"))
    if s.fixed_start:
        todo += [
            Curves(c.norm, c.epsilons, c.grid, False) for c in todo if c.grid != "dense-low grid"
        ]
    return todo


def run_attacks(s: AttackSettings, device: torch.device) -> list[Section]:
    """Train the models, then run both attack benchmarks; one section each."""
    trained, accuracy = train_digits_models(s.models, device, s.train_epochs)
    data = load_dataset("digits")
    x, y = data.x_test.to(device), data.y_test.to(device)
    if s.samples is not None:
        x, y = x[: s.samples], y[: s.samples]
    models_line = ", ".join(f"{n} test accuracy {a:.3f}" for n, a in accuracy.items())
    epochs = "advkit's default recipe" if s.train_epochs is None else f"{s.train_epochs} epochs"
    trained_note = f"Models trained on digits ({epochs}): {models_line}."

    steps = Section(f"Attacks: PGD and FGSM against one forward+backward ({len(x)} digits)")
    for name, model in trained.items():
        steps.rows += bench_steps(name, model, x, y, s, device)
    steps.after.append(
        f"{trained_note} The floor is one forward+backward with respect to the input "
        "on the clean batch with the parameters frozen; PGD and FGSM get the model as "
        "loaded (parameters requiring gradients). PGD includes its random start, "
        "argument checks and the final projection; a ratio slightly below 1 is real "
        "(subnormal floats on clean inputs slow the floor, shared/BENCHMARKING.md)."
    )

    curves = Section(f"Attacks: whole robustness curves ({len(x)} digits)")
    for name, model in trained.items():
        for c in curve_settings(s):
            rows, table = bench_curves(name, model, x, y, c, s, device)
            curves.rows += rows
            curves.after.append(table)
    grids = "; ".join(
        f"{c.norm} {c.grid or 'grid'} {list(c.epsilons)}"
        for c in curve_settings(s)
        if c.random_start
    )
    curves.after.insert(
        0,
        f"{trained_note} Epsilons: {grids}. PGD-{s.steps}, step size 2.5 * eps / steps, "
        f"random start unless the row says random_start=False, batches of "
        f"{s.batch_size}. advkit incremental attacks at each eps only the samples no "
        "smaller eps fooled and stops early on each success; from scratch (advkit "
        "`incremental=False`, torchattacks PGD/PGDL2) attacks every sample at every eps. "
        "The L-inf even grid is what `advkit attack --eps 0:0.3:8` runs. "
        "Round r uses seed r (torchattacks: the global seed r inside fork_rng). "
        "The work ratio counts the samples that go through the attacks' forward+backward "
        "passes, incremental / from scratch: it does not depend on the machine's load, "
        "and the time ratio cannot drop below it. How much incremental saves depends on "
        "the grid: each eps after the first attacks the samples still robust, so a grid "
        "dense where the model is robust (dense-low) saves less than an even one.\n\n"
        "With random starts, incremental and from scratch draw different starts for the "
        "same sample (a start is drawn for the batch attacked, and incremental batches "
        "hold only the samples still robust), so either can end a few samples ahead at "
        "some eps: the tables count these cases. With `random_start=False` both start "
        "from the clean point; a sample no smaller eps fooled then follows the same "
        "path in both, except that incremental keeps its first success where from "
        "scratch may step off it, so incremental is at most from scratch at every eps, "
        "up to float rounding (batches of other sizes can round a step differently).",
    )
    return [steps, curves]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="A fast smoke version (short training, few samples).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the tables here.")
def main(quick: bool, device: str, threads: int | None, out: str | None) -> None:
    """Time advkit's attacks against the forward+backward floor, from-scratch curves and torchattacks."""
    set_threads(threads)
    dev = resolve_device(device)
    settings = AttackSettings.quick() if quick else AttackSettings()
    machine = machine_line(dev)
    log(machine)
    text = report(run_attacks(settings, dev), machine, command_line())
    click.echo(text)
    if out:
        Path(out).write_text(text)
    log("done")


if __name__ == "__main__":
    main()
