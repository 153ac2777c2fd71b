"""``advkit attack``: a robustness curve of a trained run."""

from __future__ import annotations

import json
import sys

import click

import attacks

from .. import runs
from ..attack_runs import ATTACK_NAMES, SPLITS, attack_run, default_epsilons, make_settings
from .common import (
    Failure,
    device_option,
    fail_cleanly,
    log,
    not_empty,
    pick_device,
    progress,
)

# Each budget is a full attack of the split; more than this is a typo, not a grid
# (and a range count like 0:0.3:1000000000 would exhaust memory building the list).
MAX_EPSILONS = 1000


def parse_epsilons(ctx, param, value: str | None) -> list[float] | None:
    """``0,0.05,0.1`` or a range ``start:stop:count`` (``0:0.3:7``); increasing, >= 0."""
    if value is None:
        return None
    try:
        if ":" in value:
            start, stop, count = value.split(":")
            n = int(count)
            if not 2 <= n <= MAX_EPSILONS:
                raise click.BadParameter(
                    f"{value!r}: a range needs a count from 2 to {MAX_EPSILONS}, got {n}"
                )
            a, b = float(start), float(stop)
            eps = [a + (b - a) * i / (n - 1) for i in range(n)]
        else:
            eps = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a list like 0,0.1,0.2 nor a range like 0:0.3:7"
        ) from None
    if not eps:
        raise click.BadParameter("give at least one epsilon")
    if len(eps) > MAX_EPSILONS:
        raise click.BadParameter(f"at most {MAX_EPSILONS} epsilons, got {len(eps)}")
    if any(not (e >= 0 and e < float("inf")) for e in eps):
        raise click.BadParameter(f"{value!r}: every epsilon must be a finite number >= 0")
    # Rounded first (0:0.3:7 gives 0.30000000000000004), so the check sees what is run.
    eps = [round(e, 10) for e in eps]
    if any(b <= a for a, b in zip(eps, eps[1:], strict=False)):
        raise click.BadParameter(
            f"{value!r}: epsilons must be strictly increasing (compared to 10 decimals)"
        )
    return eps


def parse_target(ctx, param, value: str) -> str | int | None:
    if value == "none":
        return None
    if value in ("random", "least-likely"):
        return value
    try:
        k = int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not none, random, least-likely or a class index"
        ) from None
    if k < 0:
        raise click.BadParameter(f"class index must be >= 0, got {k}")
    return k


def format_table(record: dict) -> str:
    curve = record["curve"]
    unit = "L-inf" if record["settings"]["norm"] == "linf" else "L2"
    target = record["settings"]["target"]
    lines = [
        f"{record['run']}: {record['name']}  ({curve['n_samples']} samples, "
        f"clean accuracy {curve['clean_accuracy']:.4f}, {curve['seconds']:.1f}s)",
        f"{'eps (' + unit + ')':>14} {'accuracy':>9} {'success':>8} {'max norm':>9}",
    ]
    for eps, acc, rate, check in zip(
        curve["epsilons"], curve["accuracy"], curve["success_rate"], curve["checks"], strict=True
    ):
        norm = "-" if not check or check.get("max_norm") is None else f"{check['max_norm']:.4f}"
        lines.append(f"{eps:>14.4g} {acc:>9.4f} {rate:>8.4f} {norm:>9}")
    if curve.get("n_excluded"):
        lines.append(f"({curve['n_excluded']} samples of class {target} left out)")
    return "\n".join(lines)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--attack", default="pgd", show_default=True, type=click.Choice(ATTACK_NAMES))
@click.option(
    "--norm",
    default="linf",
    show_default=True,
    type=click.Choice(attacks.NORMS),
    help="Budget norm: linf (largest single change) or l2.",
)
@click.option(
    "--eps",
    "epsilons",
    callback=parse_epsilons,
    metavar="LIST|RANGE",
    help="Budgets in pixel units: 0,0.05,0.1 or start:stop:count [default: a grid for the dataset and norm, e.g. digits L-inf 0:0.3:7, L2 0:2:9].",
)
@click.option(
    "--steps", default=10, show_default=True, type=click.IntRange(min=1), help="PGD steps."
)
@click.option(
    "--step-size",
    type=click.FloatRange(min=0, min_open=True),
    help="PGD step size [default: 2.5 * eps / steps].",
)
@click.option(
    "--restarts",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="PGD random restarts; each sample keeps its best.",
)
@click.option("--no-random-start", is_flag=True, help="Start PGD at the clean input.")
@click.option(
    "--target",
    default="none",
    show_default=True,
    callback=parse_target,
    metavar="none|random|least-likely|K",
    help="Untargeted, or the class to push each sample to.",
)
@click.option(
    "--loss",
    default="ce",
    show_default=True,
    type=click.Choice(attacks.LOSSES),
    help="ce; lecture: CE(target) - CE(true), the course's targeted loss; margin: Carlini-Wagner.",
)
@click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS))
@click.option(
    "--limit", type=click.IntRange(min=1), help="Attack only the first N samples of the split."
)
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(-(2**63), 2**64 - 1),  # what torch.Generator takes
    help="Seeds random targets and random starts.",
)
@device_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    callback=not_empty,
    help="Also write the curve's JSON here ('-' for stdout instead of the table).",
)
@fail_cleanly
def attack_command(
    run,
    attack,
    norm,
    epsilons,
    steps,
    step_size,
    restarts,
    no_random_start,
    target,
    loss,
    split,
    limit,
    batch_size,
    seed,
    device,
    out,
):
    """Attack the model of RUN and write its robustness curve.

    Writes RUN/attacks/NAME.json (the curve with the attack's full settings) and
    RUN/figures/NAME.png (the curve and a gallery of clean / adversarial /
    amplified-perturbation examples), and prints the curve as a table.

    \b
    advkit attack runs/bncnn-adam --attack pgd --norm linf --eps 0:0.3:7
    advkit attack runs/bncnn-adam --attack fgsm --norm l2 --target random
    """
    dev = pick_device(device)
    config = runs.read_json(f"{run}/{runs.CONFIG}")
    if not isinstance(config, dict) or "dataset" not in config:
        raise Failure(f"{run}/config.json is not a run config")
    if epsilons is None:
        epsilons = default_epsilons(config["dataset"]["name"], norm)
    settings = make_settings(
        attack=attack, norm=norm, epsilons=epsilons, target=target, loss=loss, steps=steps,
        step_size=step_size, restarts=restarts, random_start=not no_random_start, split=split,
        limit=limit, batch_size=batch_size, seed=seed,
    )  # fmt: skip

    def on_batch(i: int, done: int, total: int) -> None:
        bar.set_postfix_str(f"eps={epsilons[i]:g} {done}/{total}", refresh=False)
        if done == total:
            bar.update(1)

    # The bar is opened inside the handler: an interrupt as it appears is handled too.
    try:
        bar = progress(len(epsilons), f"{attack} {norm}", "eps")
        try:
            record = attack_run(run, settings, device=dev, progress=on_batch)
        finally:
            bar.close()
    except KeyboardInterrupt:
        log(f"interrupted; no record was written for this attack: run the command again ({run})")
        sys.exit(130)
    if out == "-":
        click.echo(json.dumps(record, indent=2))
        return
    if out:
        runs.write_json(out, record)
    click.echo(format_table(record))
    log(f"wrote {run}/attacks/{record['name']}.json and {run}/figures/{record['name']}.png")
