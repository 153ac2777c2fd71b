"""Transfer attacks on digits: craft on some models, measure the accuracy of another.

For each victim among mlp, bncnn and attention, adversarial test images are
crafted (L-inf, untargeted) on each of the other two models and on their
`attacks.Ensemble`, with FGSM, I-FGSM (`mifgsm` with `decay=0`), MI-FGSM,
DIM-MI-FGSM (input diversity, probability 0.5) and DIM-TI-MI-FGSM (plus a 3x3
translation kernel), and the victim classifies them. The white-box PGD accuracy
of each victim shows that the budget is large enough to fool it when attacked
directly. The expected order, after Dong et al. 2018 and Xie et al. 2019:
ensemble + DIM-MI <= MI <= I <= FGSM in victim accuracy.

    python scripts/transfer_digits.py                       # trains the three runs if missing
    python scripts/transfer_digits.py --runs "/tmp/tr-{model}" --eps 0.25 --json transfer.json

Runs come from `advkit train` (any run directory per model: `--runs` is a
pattern with `{model}`); a missing one is trained here with the defaults of
`advkit train --optimizer adam`. Uses only the public API of attacks and advkit.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

import attacks
from advkit import load_run
from advkit.data import load_dataset
from advkit.runs import write_json
from advkit.train import TrainConfig, train

MODELS = ("mlp", "bncnn", "attention")

# Name -> (attack, its options, whether it draws random numbers). Every attack
# gets the source model, the images, eps, `steps` (steps of eps / steps) and,
# when random, a generator.
ATTACKS: dict[str, tuple[Callable[..., torch.Tensor], dict[str, Any], bool]] = {
    "FGSM": (attacks.fgsm, {}, False),
    "I-FGSM": (attacks.mifgsm, {"decay": 0.0}, False),
    "MI-FGSM": (attacks.mifgsm, {}, False),
    "DIM-MI-FGSM": (attacks.mifgsm, {"diversity": 0.5}, True),
    "DIM-TI-MI-FGSM": (attacks.mifgsm, {"diversity": 0.5, "translation": 3}, True),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), attacks.eval_mode(model):
        return (attacks.logits_of(model(x)).argmax(dim=1) == y).double().mean().item()


def load_models(pattern: str, data) -> dict[str, nn.Module]:
    """Each model's run from `pattern` (with `{model}`), trained first if it is missing."""
    loaded = {}
    for name in MODELS:
        path = Path(pattern.format(model=name))
        if not (path / "summary.json").exists():
            log(f"training {name} into {path}")
            train(TrainConfig(model=name, optimizer="adam"), path, dataset=data, force=True)
        loaded[name], _ = load_run(path)
    return loaded


def transfer(
    name: str,
    source: nn.Module,
    victim: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    seeds: int,
) -> tuple[float, float]:
    """The victim's and the source's accuracy on images crafted on the source.

    A random attack is run with generators seeded 0 .. seeds - 1 and its
    accuracies averaged: one seed's result varies by several points.
    """
    attack, options, random = ATTACKS[name]
    if attack is not attacks.fgsm:
        options = {**options, "steps": steps}
    results = []
    for seed in range(seeds if random else 1):
        if random:
            options = {**options, "generator": torch.Generator().manual_seed(seed)}
        x_adv = attack(source, x, y, eps, **options)
        results.append((accuracy(victim, x_adv, y), accuracy(source, x_adv, y)))
    victim_accuracy, source_accuracy = (sum(r) / len(results) for r in zip(*results, strict=True))
    return victim_accuracy, source_accuracy


def measure(
    nets: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    seeds: int,
) -> list[dict]:
    """One row per victim and source: the victim's accuracy on each attack's images."""
    rows = []
    for victim in MODELS:
        others = [name for name in MODELS if name != victim]
        sources = {name: nets[name] for name in others}
        sources[" + ".join(others)] = attacks.Ensemble([nets[name] for name in others])
        white_box = attacks.pgd(
            nets[victim], x, y, eps, steps=steps, generator=torch.Generator().manual_seed(0)
        )
        for source_name, source in sources.items():
            row = {
                "victim": victim,
                "source": source_name,
                "clean": accuracy(nets[victim], x, y),
                "white_box_pgd": accuracy(nets[victim], white_box, y),
            }
            for attack_name in ATTACKS:
                start = time.perf_counter()
                row[attack_name], row[f"{attack_name} source accuracy"] = transfer(
                    attack_name, source, nets[victim], x, y, eps, steps, seeds
                )
                log(
                    f"{victim:9} <- {source_name:17} {attack_name:14} "
                    f"{row[attack_name]:.3f} ({time.perf_counter() - start:.1f}s)"
                )
            rows.append(row)
    return rows


def table(rows: list[dict], eps: float, steps: int, seeds: int) -> str:
    """The victims' accuracies as a Markdown table."""
    names = list(ATTACKS)
    lines = [
        f"Victim accuracy (%) on digits test images crafted on the source, "
        f"L-inf eps={eps}, {steps} steps (FGSM: one), DIM averaged over {seeds} seeds",
        "",
        "| victim | clean | white-box PGD | source | " + " | ".join(names) + " |",
        "|---|---:|---:|---|" + "---:|" * len(names),
    ]
    for row in rows:
        cells = " | ".join(f"{100 * row[name]:.1f}" for name in names)
        lines.append(
            f"| {row['victim']} | {100 * row['clean']:.1f} | {100 * row['white_box_pgd']:.1f} "
            f"| {row['source']} | {cells} |"
        )
    return "\n".join(lines)


@click.command()
@click.option(
    "--runs",
    "pattern",
    default="runs-transfer/{model}",
    show_default=True,
    help="Run directory of each model, with {model} in it; missing runs are trained.",
)
@click.option("--eps", type=click.FloatRange(min=0), default=0.2, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Seeds to average the random attacks (DIM) over.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows.")
def main(pattern: str, eps: float, steps: int, seeds: int, json_path: str | None) -> None:
    """Measure how well attacks crafted on two digits models transfer to the third."""
    if "{model}" not in pattern:
        raise click.BadParameter("must contain {model}", param_hint="--runs")
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0)
    nets = load_models(pattern, data)
    rows = measure(nets, data.x_test, data.y_test, eps, steps, seeds)
    click.echo(table(rows, eps, steps, seeds))
    if json_path:
        write_json(json_path, {"eps": eps, "steps": steps, "seeds": seeds, "rows": rows})


if __name__ == "__main__":
    main()
