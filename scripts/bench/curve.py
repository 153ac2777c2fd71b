"""Curve suite: the whole robustness curve by the "descend" method, against eps by eps.

On the digits test set (all 360 images) with the MLP and BN-CNN trained by
advkit: `robustness_curve(method="descend")` (the default) against
`method="per-eps"` and against torchattacks PGD-20 run at each eps from
scratch; and `strong` by descend against `strong` at each eps from scratch.
Times are interleaved rounds (harness.interleaved); passes are counted by
`attacks.count_passes` for every method alike (forward + backward sample-passes).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

import attacks
from advkit import robustness_curve
from advkit.data import load_dataset
from attacks.strong import PRESET_OPTIONS, STRENGTHS

from .attacks import PEERS, trained_models
from .attacks import Settings as TrainSettings
from .harness import Row, Section, interleaved, log, markdown_table, ratios, synchronizer

GRIDS = {
    "linf dense-low": ("linf", (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)),
    "linf even": ("linf", tuple(round(0.3 * i / 7, 10) for i in range(8))),
    "l2 even": ("l2", tuple(round(2.0 * i / 7, 10) for i in range(8))),
}


@dataclass
class Settings:
    models: tuple[str, ...] = ("mlp", "bncnn")
    grids: tuple[str, ...] = tuple(GRIDS)
    strong_grids: tuple[str, ...] = ("linf dense-low", "l2 even")
    samples: int | None = None
    train_epochs: int | None = None
    steps: int = 20
    repeats: int = 3
    strong_repeats: int = 1
    batch_size: int = 256

    @classmethod
    def quick(cls) -> Settings:
        return cls(samples=120, train_epochs=3, repeats=1, strong_grids=("linf dense-low",))


def peer(model: nn.Module, x, y, norm: str, epsilons, steps: int, batch: int, seed: int):
    """torchattacks PGD at each eps from scratch (global RNG seeded inside fork_rng)."""
    accuracy = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for eps in epsilons:
            correct = 0
            for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
                if eps > 0:
                    xb = PEERS[norm](model, eps=eps, alpha=2.5 * eps / steps, steps=steps)(xb, yb)
                with torch.no_grad():
                    correct += int((model(xb).argmax(dim=1) == yb).sum())
            accuracy.append(correct / len(x))
    return accuracy


def compare(model, x, y, grid: str, runs: dict, repeats: int, device) -> tuple[dict, dict, dict]:
    """Time each run (interleaved rounds, seed = round); its accuracy and passes per round."""
    found: dict[str, list] = {key: [] for key in runs}
    work: dict[str, list] = {key: [] for key in runs}

    def call(key: str, xs, ys, keep: bool) -> None:
        with attacks.count_passes(model) as passes:
            accuracy = runs[key](xs, ys, len(found[key]))
        if keep:
            found[key].append(accuracy)
            work[key].append(float(passes.forward + passes.backward))

    few = slice(0, min(16, len(x)))
    times = interleaved(
        {key: lambda key=key: call(key, x, y, True) for key in runs},
        repeats=repeats,
        warmup={key: lambda key=key: call(key, x[few], y[few], False) for key in runs},
        sync=synchronizer(device),
    )
    return times, found, work


def accuracy_table(title: str, epsilons, found: dict, reference: str, n: int) -> str:
    """Robust accuracy per eps (median over rounds) and each method minus the reference, points."""
    keys = list(found)
    rows, diffs = [], {key: [] for key in keys if key != reference}
    for i, eps in enumerate(epsilons):
        median = {key: statistics.median(run[i] for run in found[key]) for key in keys}
        for key in diffs:
            diffs[key].append(100 * (median[key] - median[reference]))
        rows.append(
            [f"{eps:g}", *(f"{median[k]:.3f}" for k in keys)]
            + [f"{diffs[k][-1]:+.1f}" for k in diffs]
        )
    rows.append(
        ["mean", *("" for _ in keys), *(f"{statistics.mean(diffs[k]):+.2f}" for k in diffs)]
    )
    head = ["eps", *keys, *(f"{k} - {reference} (points)" for k in diffs)]
    return f"Robust accuracy, {title}, {n} samples:\n\n" + markdown_table(head, rows)


def pgd_rows(name, model, x, y, grid: str, s: Settings, device) -> tuple[list[Row], str]:
    norm, epsilons = GRIDS[grid]
    log(f"  {name} {grid}: descend / per-eps / torchattacks, PGD-{s.steps}")
    common = {"norm": norm, "steps": s.steps, "batch_size": s.batch_size}

    def ours(method: str):
        return lambda xs, ys, seed: (
            robustness_curve(model, xs, ys, epsilons, method=method, seed=seed, **common).accuracy
        )

    runs = {
        "descend": ours("descend"),
        "per-eps": ours("per-eps"),
        "torchattacks": lambda xs, ys, seed: peer(
            model, xs, ys, norm, epsilons, s.steps, s.batch_size, seed
        ),
    }
    t, found, work = compare(model, x, y, grid, runs, s.repeats, device)
    what = f"curve {len(epsilons)} eps PGD-{s.steps}, {name}, {grid}"
    peer_note = "ratio: / torchattacks PGD at each eps"
    rows = [
        Row(f"{what}: descend", t["descend"], ratios=ratios(t["descend"], t["torchattacks"]),
            target=("<=", 0.30), note=peer_note),
        Row(f"{what}: descend passes", work["descend"], unit="count",
            ratios=ratios(work["descend"], work["torchattacks"]), note="ratio: / torchattacks"),
        Row(f"{what}: per-eps", t["per-eps"], ratios=ratios(t["per-eps"], t["torchattacks"]),
            note=peer_note),
        Row(f"{what}: per-eps passes", work["per-eps"], unit="count",
            ratios=ratios(work["per-eps"], work["torchattacks"]), note="ratio: / torchattacks"),
        Row(f"{what}: torchattacks", t["torchattacks"]),
        Row(f"{what}: torchattacks passes", work["torchattacks"], unit="count"),
    ]  # fmt: skip
    return rows, accuracy_table(f"{name}, {grid}", epsilons, found, "torchattacks", len(x))


def strong_rows(name, model, x, y, grid: str, s: Settings, device) -> tuple[list[Row], str]:
    norm, epsilons = GRIDS[grid]
    log(f"  {name} {grid}: strong by descend / from scratch")

    def run(**options):
        return lambda xs, ys, seed: robustness_curve(
            model, xs, ys, epsilons, attack="strong", norm=norm, seed=seed,
            batch_size=s.batch_size, **options,
        ).accuracy  # fmt: skip

    runs = {"strong descend": run(), "strong from scratch": run(incremental=False)}
    t, found, work = compare(model, x, y, grid, runs, s.strong_repeats, device)
    what = f"curve {len(epsilons)} eps strong, {name}, {grid}"
    a, b = "strong descend", "strong from scratch"
    rows = [
        Row(f"{what}: descend", t[a], ratios=ratios(t[a], t[b]), target=("<=", 0.30),
            note="ratio: / strong at each eps from scratch"),
        Row(f"{what}: descend passes", work[a], unit="count", ratios=ratios(work[a], work[b]),
            note="ratio: / from scratch"),
        Row(f"{what}: from scratch", t[b]),
        Row(f"{what}: floor of the passes ratio at equal strength", [floor(epsilons, found[b])],
            unit="", note="information: robust at the smallest eps / sum over eps, from scratch"),
    ]  # fmt: skip
    return rows, accuracy_table(f"{name}, {grid}, strong", epsilons, found, b, len(x))


def floor(epsilons, runs: list[list[float]]) -> float:
    """The least share of from-scratch work any exact walk of the grid must spend.

    From scratch, every sample robust at an eps pays one failed attack there;
    a walk that keeps the same strength pays one failed attack per sample still
    robust at the smallest eps > 0 (at the eps just below its breaking one), and
    infers the rest from nesting. Failed attacks dominate the cost (the
    successes stop early), so their ratio bounds the passes ratio from below.
    """
    robust = [statistics.median(run[i] for run in runs) for i in range(len(epsilons))]
    attacked = [a for eps, a in zip(epsilons, robust, strict=True) if eps > 0]
    return attacked[0] / sum(attacked) if sum(attacked) else 0.0


def suite(device: torch.device, quick: bool) -> list[Section]:
    s = Settings.quick() if quick else Settings()
    trained, line = trained_models(
        TrainSettings(models=s.models, train_epochs=s.train_epochs), device
    )
    data = load_dataset("digits")
    x, y = data.x_test[: s.samples].to(device), data.y_test[: s.samples].to(device)
    pgd = Section(
        f"Whole curves: descend vs per-eps vs torchattacks PGD-{s.steps} ({len(x)} digits)"
    )
    strong = Section(
        f"Whole curves with strong: descend vs each eps from scratch ({len(x)} digits)"
    )
    grids = "; ".join(f"{g}: {list(GRIDS[g][1])}" for g in s.grids)
    pgd.extra.append(f"{line} Batches of {s.batch_size}. Grids: {grids}.")
    sizes = dict(zip(PRESET_OPTIONS, STRENGTHS["default"], strict=True))
    strong.extra.append(f"{line} strong with its default preset: {sizes}.")
    for name, model in trained.items():
        for grid in s.grids:
            rows, table = pgd_rows(name, model, x, y, grid, s, device)
            pgd.rows += rows
            pgd.extra.append(table)
        for grid in s.strong_grids:
            rows, table = strong_rows(name, model, x, y, grid, s, device)
            strong.rows += rows
            strong.extra.append(table)
    return [pgd, strong]
