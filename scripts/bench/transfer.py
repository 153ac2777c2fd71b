"""Transfer suite: how well attacks crafted on two digits models fool the third.

For each victim among mlp, bncnn and attention, adversarial test images are
crafted (L-inf, untargeted, rounded to 8-bit levels inside the budget by
`advkit.transfer`) on each of the other two models and on their
`attacks.Ensemble`, with FGSM, I-FGSM (`mifgsm` with `decay=0`), MI-FGSM,
DIM-MI-FGSM (input diversity, probability 0.5) and DIM-TI-MI-FGSM (plus a 3x3
translation kernel), and the victim classifies them. White-box PGD on the
victim shows that the budget fools it when attacked directly. The order the
course homework teaches (Dong et al. 2018, Xie et al. 2019) is
ensemble + DIM-MI <= MI <= I <= FGSM in victim accuracy; the rows check each
step of it on the ensemble source.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import attacks
from advkit import load_run
from advkit.data import load_dataset
from advkit.evaluate import attack_options
from advkit.train import TrainConfig, train
from advkit.transfer import TransferSettings, count_correct, transfer

from .harness import Row, Section, log

MODELS = ("mlp", "bncnn", "attention")

# Name -> (attack, its options); options with `diversity` draw random numbers.
ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "FGSM": ("fgsm", {}),
    "I-FGSM": ("mifgsm", {"decay": 0.0}),
    "MI-FGSM": ("mifgsm", {}),
    "DIM-MI-FGSM": ("mifgsm", {"diversity": 0.5}),
    "DIM-TI-MI-FGSM": ("mifgsm", {"diversity": 0.5, "translation": 3}),
}

# Each step of the homework's order, checked on the ensemble source: (better, worse).
ORDER = (("I-FGSM", "FGSM"), ("MI-FGSM", "I-FGSM"), ("DIM-MI-FGSM", "MI-FGSM"))


@dataclass
class Settings:
    """Budget, attack steps, seeds averaged for the random attacks, samples, training epochs."""

    eps: float = 0.2
    steps: int = 10
    seeds: int = 3
    limit: int | None = None  # None: the whole digits test split (360)
    epochs: int | None = None  # None: each model's default

    @classmethod
    def quick(cls) -> Settings:
        return cls(steps=5, seeds=1, limit=120, epochs=2)


def victim_accuracy(
    name: str, source: nn.Module, victim: nn.Module, x, y, s: Settings, device
) -> list[float]:
    """The victim's accuracy on images crafted on the source, one value per seed."""
    attack, options = ATTACKS[name]
    if "steps" in attack_options(attack):  # the iterative attacks
        options = {**options, "steps": s.steps}
    seeds = range(s.seeds if options.get("diversity") else 1)
    values = []
    for seed in seeds:
        settings = TransferSettings.make(attack=attack, epsilons=[s.eps], seed=seed, **options)
        record = transfer({"source": source}, {"victim": victim}, x, y, settings, device=device)
        values.append(record.accuracy[0][0][0])
    return values


def measure(nets: dict[str, nn.Module], x, y, s: Settings, device="cpu") -> list[dict]:
    """One row per victim and source: the victim's accuracy (per seed) under each attack."""
    rows = []
    n = len(y)
    for victim in MODELS:
        others = [name for name in MODELS if name != victim]
        sources: dict[str, nn.Module] = {name: nets[name] for name in others}
        sources[" + ".join(others)] = attacks.Ensemble([nets[name] for name in others])
        generator = torch.Generator(device=device).manual_seed(0)
        white = attacks.pgd(nets[victim], x.to(device), y.to(device), s.eps, steps=s.steps,
                            generator=generator).cpu()  # fmt: skip
        count = {"batch_size": 256, "device": device}
        base = {
            "victim": victim,
            "clean": count_correct(nets[victim], x, y, **count) / n,
            "white_box_pgd": count_correct(nets[victim], white, y, **count) / n,
        }
        for source_name, source in sources.items():
            row: dict[str, Any] = {**base, "source": source_name}
            for attack_name in ATTACKS:
                row[attack_name] = victim_accuracy(
                    attack_name, source, nets[victim], x, y, s, device
                )
            log(f"{victim:9} <- {source_name:17} " + " ".join(
                f"{a} {statistics.mean(row[a]):.3f}" for a in ATTACKS))  # fmt: skip
            rows.append(row)
    return rows


def table(rows: list[dict], s: Settings, n: int) -> str:
    """The victims' accuracies as a markdown table (random attacks: mean over seeds)."""
    names = list(ATTACKS)
    lines = [
        f"Victim accuracy (%) on {n} digits test images crafted on the source, 8-bit, "
        f"L-inf eps={s.eps}, {s.steps} steps (FGSM: one), DIM averaged over {s.seeds} seed(s)",
        "",
        "| victim | clean | white-box PGD | source | " + " | ".join(names) + " |",
        "|---|---:|---:|---|" + "---:|" * len(names),
    ]
    for row in rows:
        cells = " | ".join(f"{100 * statistics.mean(row[name]):.1f}" for name in names)
        lines.append(
            f"| {row['victim']} | {100 * row['clean']:.1f} | {100 * row['white_box_pgd']:.1f} "
            f"| {row['source']} | {cells} |"
        )
    return "\n".join(lines)


def order_rows(rows: list[dict]) -> list[Row]:
    """Per victim, each step of the order on the ensemble source: accuracy difference <= 0."""
    out = []
    for row in rows:
        if " + " not in row["source"]:
            continue
        for better, worse in ORDER:
            worse_mean = statistics.mean(row[worse])
            out.append(
                Row(
                    f"{row['victim']} <- {row['source']}: {better} - {worse}",
                    [v - worse_mean for v in row[better]],
                    unit="",
                    target=("<=", 0.0),
                    note="victim accuracy difference",
                )
            )
    return out


def bench(nets: dict[str, nn.Module], x, y, s: Settings, device="cpu") -> list[Section]:
    rows = measure(nets, x, y, s, device)
    note = (
        "A row is met when the stronger attack leaves the victim no more accurate than the "
        "weaker one (difference <= 0; random attacks: one value per seed). Digits models are "
        "small and different in kind (an MLP, a CNN, an attention model), so an attack that "
        "fits its sources better (momentum, more steps) can transfer worse to a model of "
        "another family: where a row is not met, the table shows by how much."
    )
    return [Section("Transfer matrix on digits", order_rows(rows), [note, table(rows, s, len(y))])]


def suite(device: torch.device, quick: bool) -> list[Section]:
    s = Settings.quick() if quick else Settings()
    data = load_dataset("digits", seed=0)
    nets = {}
    with tempfile.TemporaryDirectory(prefix="advkit-bench-transfer-") as root:
        for name in MODELS:
            log(f"training {name}")
            config = TrainConfig(model=name, optimizer="adam", epochs=s.epochs)
            train(config, Path(root) / name, dataset=data, device=device)
            nets[name], _ = load_run(Path(root) / name, device=device)
    x, y = data.x_test[: s.limit], data.y_test[: s.limit]
    return bench(nets, x, y, s, device)
