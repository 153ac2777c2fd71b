"""Defenses suite: adversarial training on digits, its cost per epoch, passive defenses vs adaptive attacks.

- PGD-AT (L-inf eps 0.1, 10 steps), FGSM-RS and TRADES on the bncnn, default
  epochs: clean test accuracy and robust accuracy at 0.1 under `attack="strong"`.
- Cost per epoch of the training pass (first batch to last batch; the
  per-epoch validation, robust accuracy included, left out) relative to
  standard training's: one-epoch runs of every mode on the same batches (same
  seed), in alternating rounds after a warm-up round (A B C, C B A, ...),
  medians of same-round ratios (shared/BENCHMARKING.md). The full runs' epoch
  with its robust validation is given beside it for information.
- JPEG and random resize-and-pad on the standard bncnn: PGD-20 accuracy at 0.1
  naive and adaptive (BPDA, EOT-8), against the undefended model's, and each
  defense's clean accuracy (what the transform itself costs: one draw of
  resize's randomness per prediction).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from advkit.data import load_dataset
from advkit.defenses import defend
from advkit.evaluate import robustness_curve
from advkit.runs import load_run
from advkit.train import Reporter, TrainConfig, train

from .harness import Row, Section, log, ratios

EPS = 0.1
STEPS = 10
MODES: dict[str, dict[str, Any]] = {
    "standard": {},
    "pgd": {"adversarial": "pgd", "adv_eps": EPS, "adv_steps": STEPS},
    "fgsm-rs": {"adversarial": "fgsm-rs", "adv_eps": EPS},
    "trades": {"adversarial": "trades", "adv_eps": EPS, "adv_steps": STEPS},
}


class PassTimer(Reporter):
    """Seconds of each epoch's training pass: from its start to its last batch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None:
        self.started = time.perf_counter()

    def batch_end(self, loss: float, acc: float) -> None:
        self.last = time.perf_counter()

    def epoch_end(self, row: dict) -> None:
        self.seconds.append(self.last - self.started)


def pass_rounds(root: Path, device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Seconds of one training pass of each mode, per round, in alternating order.

    Each call is a fresh one-epoch run with the same seed (the same weights
    and batches); a first round warms up and is not kept.
    """
    data = load_dataset("digits")
    times: dict[str, list[float]] = {name: [] for name in MODES}
    names = list(MODES)
    for r in range(rounds + 1):
        for name in names if r % 2 == 0 else names[::-1]:
            timer = PassTimer()
            config = TrainConfig(model="bncnn", epochs=1, **MODES[name])
            train(config, root / f"pass-{name}-{r}", device=device, reporter=timer, dataset=data)
            if r > 0:
                times[name] += timer.seconds
    log(
        "training passes: "
        + ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in times.items())
    )
    return times


def train_all(root: Path, device: torch.device, epochs: int | None) -> dict[str, dict]:
    data = load_dataset("digits")
    results = {}
    for name, options in MODES.items():
        timer = PassTimer()
        started = time.perf_counter()
        config = TrainConfig(model="bncnn", epochs=epochs, **options)
        summary = train(config, root / name, device=device, reporter=timer, dataset=data)
        log(f"trained {name}: {time.perf_counter() - started:.1f}s")
        results[name] = {"summary": summary, "pass": timer.seconds, "dir": root / name}
    return results


def strong_accuracy(run_dir: Path, device: torch.device, limit: int | None) -> float:
    model, _ = load_run(run_dir, device=device)
    data = load_dataset("digits")
    x, y = data.x_test[:limit], data.y_test[:limit]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = robustness_curve(model, x, y, [0.0, EPS], attack="strong", device=device)
    return curve.accuracy[-1]


def pgd_curve(model, device: torch.device, limit: int | None) -> tuple[float, float]:
    """Clean accuracy and PGD-20 accuracy at EPS (the curve's own early-stopping rule)."""
    data = load_dataset("digits")
    x, y = data.x_test[:limit], data.y_test[:limit]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the masked-gradient flag of naive attacks
        curve = robustness_curve(model, x, y, [0.0, EPS], attack="pgd", steps=20, device=device)
    return curve.accuracy[0], curve.accuracy[-1]


def training_section(
    results: dict, passes: dict[str, list[float]], device: torch.device, limit: int | None
) -> Section:
    rows = []
    for name, r in results.items():
        clean = r["summary"]["test_accuracy"]
        robust = strong_accuracy(r["dir"], device, limit)
        log(f"{name}: clean {clean:.4f}, strong robust at {EPS} {robust:.4f}")
        target_clean = (">=", 0.97) if name == "pgd" else None
        target_robust = (">=", 0.75) if name == "pgd" else None
        rows.append(Row(f"{name}: clean test accuracy", [clean], "", target=target_clean))
        rows.append(
            Row(f"{name}: robust accuracy, strong, L-inf {EPS}", [robust], "", target=target_robust)
        )
    base = passes["standard"]
    rows.append(Row("standard: training pass per epoch", base, "s", note="one-epoch runs"))
    bounds = {"pgd": 1.1 * (STEPS + 1), "fgsm-rs": 2.2, "trades": None}
    for name, bound in bounds.items():
        rows.append(
            Row(
                f"{name}: training pass per epoch / standard's", passes[name], "s",
                ratios=ratios(passes[name], base),
                target=None if bound is None else ("<=", round(bound, 2)),
                note=f"{STEPS} steps" if name != "fgsm-rs" else "1 step",
            )
        )  # fmt: skip
    for name in MODES:
        epoch = [row["seconds"] for row in _metrics(results[name]["dir"])]
        what = f"{name}: epoch of the full run" + (
            " with robust validation" if name != "standard" else ""
        )
        rows.append(Row(what, epoch, "s", note="information"))
    return Section(f"Adversarial training, bncnn on digits, L-inf eps {EPS}", rows)


def _metrics(run_dir: Path) -> list[dict]:
    from advkit.runs import read_jsonl

    return read_jsonl(run_dir / "metrics.jsonl")


def defense_section(run_dir: Path, device: torch.device, limit: int | None) -> Section:
    model, _ = load_run(run_dir, device=device)
    clean, bare = pgd_curve(model, device, limit)
    rows = [
        Row("undefended: clean accuracy", [clean], ""),
        Row(f"undefended: PGD-20 accuracy at {EPS}", [bare], ""),
    ]
    for spec, adaptive in (("jpeg:75", "bpda"), ("resize:0.1", "eot:8")):
        defended_clean, naive = pgd_curve(defend(model, spec, seed=0), device, limit)
        _, strong = pgd_curve(defend(model, spec, adaptive=adaptive, seed=0), device, limit)
        log(f"{spec}: naive {naive:.4f}, {adaptive} {strong:.4f}, undefended {bare:.4f}")
        rows.append(Row(f"{spec}: clean accuracy (one draw per prediction)", [defended_clean], ""))
        rows.append(Row(f"{spec}: naive PGD-20 accuracy at {EPS}", [naive], ""))
        rows.append(
            Row(
                f"{spec}: {adaptive} PGD-20 accuracy at {EPS} minus undefended's", [strong - bare],
                "", target=("<=", 0.05),
                note=f"naive {naive:.3f} -> {adaptive} {strong:.3f}, undefended {bare:.3f}",
            )
        )  # fmt: skip
    return Section("Passive defenses on the standard bncnn, naive vs adaptive", rows)


def suite(device: torch.device, quick: bool) -> list[Section]:
    with tempfile.TemporaryDirectory() as tmp:
        passes = pass_rounds(Path(tmp), device, rounds=3 if quick else 7)
        results = train_all(Path(tmp), device, epochs=3 if quick else None)
        limit = 120 if quick else None
        return [
            training_section(results, passes, device, limit),
            defense_section(results["standard"]["dir"], device, limit),
        ]
