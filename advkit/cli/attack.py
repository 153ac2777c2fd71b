"""``advkit attack``: a robustness curve of a trained run."""

from __future__ import annotations

import json
import math
import os
import sys

import click

import attacks

from .. import distributed, runs
from ..attack_runs import attack_run, default_epsilons, find_complete
from ..defenses import canonical_adaptive
from ..evaluate import Curve, attack_options
from ..records import SPLITS, AttackRecord, AttackSettings
from ..trust import unchecked_shapes
from .common import (
    Failure,
    device_option,
    fail_cleanly,
    join_process_group,
    log,
    not_empty,
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


def format_table(record: AttackRecord) -> str:
    curve, settings = record.curve, record.settings
    unit = "L-inf" if settings.norm == "linf" else "L2"
    samples = f"{curve.n_samples} sample{'s' if curve.n_samples != 1 else ''}"
    cost = curve.cost
    lines = [
        f"{record.run}: {record.name}  ({samples}, clean accuracy {curve.clean_accuracy:.4f}, "
        f"{curve.seconds:.1f}s, {cost['forward']:.1f} forward + {cost['backward']:.1f} "
        "backward passes per sample)",
        f"{'eps (' + unit + ')':>14} {'accuracy':>9} {'success':>8} {'max norm':>9} "
        f"{'95% interval':>15} {'fwd+bwd/sample':>14}",
    ]
    untouched = False
    intervals = curve.intervals or [[math.nan, math.nan]] * len(curve.epsilons)
    for eps, acc, rate, check, (low, high) in zip(
        curve.epsilons, curve.accuracy, curve.success_rate, curve.checks, intervals, strict=True
    ):
        if not check or check.get("max_norm") is None:
            norm, untouched = "-", untouched or eps > 0
        else:
            norm = f"{check['max_norm']:.4f}"
        spent = (check.get("forward", 0) + check.get("backward", 0)) / max(curve.n_samples, 1)
        interval = f"[{low:.3f}, {high:.3f}]"
        lines.append(
            f"{eps:>14.4g} {acc:>9.4f} {rate:>8.4f} {norm:>9} {interval:>15} {spent:>14.1f}"
        )
    if untouched:
        lines.append("(max norm '-': no sample was left to attack at that eps)")
    if curve.n_excluded:
        lines.append(f"({curve.n_excluded} samples of class {settings.target} left out)")
    lines += _stage_lines(curve.epsilons, curve.checks)
    lines += [f"! {flag['message']}" for flag in curve.flags] or [
        _no_flag_line(curve, settings.norm)
    ]
    return "\n".join(lines)


def _no_flag_line(curve: Curve, norm: str) -> str:
    """What was checked when no check fired, and what this grid left unchecked."""
    unchecked = unchecked_shapes(curve.epsilons, norm, curve.settings.get("clip"))
    line = (
        "trust checks: no warning (outputs are logits, eval mode is deterministic, input "
        "gradients are non-zero"
    )
    if "flat-tail" not in unchecked:
        line += ", the curve keeps falling"
    missing = ", ".join(unchecked.values())
    return line + (f"; beyond this grid: {missing}" if missing else "") + ")"


def _stage_lines(epsilons: list[float], checks: list[dict]) -> list[str]:
    """For a staged attack (strong): per eps, what each stage attacked, fooled and cost."""
    lines = []
    for eps, check in zip(epsilons, checks, strict=True):
        stages = (check or {}).get("stages") or []
        if stages:
            parts = [
                f"{s['stage']} {s['fooled']}/{s['attacked']} ({s['forward'] + s['backward']} passes)"
                for s in stages
                if s.get("attacked")
            ]
            lines.append(f"stages at eps {eps:g} (fooled/attacked): " + ", ".join(parts))
    return lines


# Options of `advkit attack` that belong to the attack itself, by the attack's
# own keyword (only passed to attacks whose signature has them).
ATTACK_OPTIONS = ("steps", "step_size", "restarts", "random_start", "loss")


def attack_settings(ctx: click.Context, attack: str, **values) -> AttackSettings:
    """The settings of the command line: the attack's own options only if it takes them.

    An option the user typed that the attack does not take is an error, not
    silently ignored (FGSM has no --steps).
    """
    takes = attack_options(attack)
    options = {}
    for name in ATTACK_OPTIONS:
        cli_name = "no_random_start" if name == "random_start" else name
        value = values.pop(cli_name)
        if name == "random_start":
            value = not value
        typed = ctx.get_parameter_source(cli_name) is not click.core.ParameterSource.DEFAULT
        if name in takes and typed:
            options[name] = value
        elif name in takes:
            continue  # the attack's own default (strong's steps are not PGD's 10)
        elif typed:
            flag = "--" + cli_name.replace("_", "-")
            raise click.UsageError(f"{flag} does not apply to --attack {attack}")
    return AttackSettings.make(attack=attack, **values, **options)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--attack",
    default="pgd",
    show_default=True,
    type=click.Choice(tuple(attacks.ATTACKS)),
    help="The attack, by its name in attacks.ATTACKS.",
)
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
    "--steps",
    type=click.IntRange(min=1),
    help="Steps of an iterative attack [default: the attack's own: pgd 10, apgd 100, strong 100].",
)
@click.option(
    "--step-size",
    type=click.FloatRange(min=0, min_open=True),
    help="PGD step size [default: 2.5 * eps / steps].",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=1),
    help="Random restarts (pgd, apgd, square); each sample keeps its best [default: 1].",
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
    type=click.Choice(attacks.LOSSES),
    help="ce; lecture: CE(target) - CE(true), the course's targeted loss; margin: Carlini-Wagner; "
    "dlr: difference of logits ratio [default: the attack's own, ce for most, margin for square].",
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
    type=click.IntRange(0, 2**63 - 1),
    help="Seeds random targets and random starts (an int >= 0).",
)
@click.option(
    "--dataset",
    "dataset_path",
    type=click.Path(exists=True),
    help="Read the run's data from here (it moved) instead of the path in its config.json.",
)
@click.option(
    "--allow-changed-data",
    is_flag=True,
    help="Attack data that changed since training (its sha256 differs), with a warning.",
)
@click.option(
    "--defense",
    metavar="SPEC",
    help="Attack the model behind a passive defense: jpeg:Q, blur:SIGMA, bits:B, resize:F "
    "(random resize-and-pad), joined with + (e.g. jpeg:75+blur:0.5).",
)
@click.option(
    "--adaptive",
    default="none",
    show_default=True,
    metavar="none|bpda|eot:N",
    help="With --defense: also run the adaptive attack (BPDA through non-differentiable "
    "transforms, EOT over N draws of the randomness) and show it beside the naive one.",
)
@click.option(
    "--force", is_flag=True, help="Recompute a record that exists with exactly these settings."
)
@device_option
@click.option(
    "--amp",
    default="none",
    show_default=True,
    type=click.Choice(["none", "bf16", "fp16"]),
    help="Forward passes under autocast in this precision (GPU); losses and the budget stay "
    "float32.",
)
@click.option("--channels-last", is_flag=True, help="Convolutions in NHWC memory (GPU).")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
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
    dataset_path,
    allow_changed_data,
    defense,
    adaptive,
    force,
    device,
    amp,
    channels_last,
    compile_model,
    out,
):
    """Attack the model of RUN and write its robustness curve.

    Writes RUN/attacks/NAME.json (the curve with the attack's full settings) and
    RUN/figures/NAME.png (the curve and a gallery of clean / adversarial /
    amplified-perturbation examples), and prints the curve as a table.

    \b
    advkit attack runs/bncnn-adam --attack pgd --norm linf --eps 0:0.3:7
    advkit attack runs/bncnn-adam --attack fgsm --norm l2 --target random
    advkit attack runs/bncnn-adam --defense jpeg:75 --adaptive bpda
    torchrun --nproc-per-node 2 -m advkit attack runs/bncnn-adam   (shared across 2 processes)
    """
    dev = join_process_group(device)
    main_rank = distributed.is_main()
    config = runs.read_json(f"{run}/{runs.CONFIG}")
    if not isinstance(config, dict) or "dataset" not in config:
        raise Failure(f"{run}/config.json is not a run config")
    if out not in (None, "-") and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise Failure(f"--out {out}: the directory {os.path.dirname(out) or '.'} does not exist")
    if epsilons is None:
        epsilons = default_epsilons(config["dataset"]["name"], norm)
    if adaptive != "none" and defense is None:
        raise Failure("--adaptive needs --defense: there is no defense to adapt to")
    adaptive = canonical_adaptive(adaptive) or "none"
    options = dict(
        norm=norm, epsilons=epsilons, target=target, loss=loss, steps=steps,
        step_size=step_size, restarts=restarts, no_random_start=no_random_start, split=split,
        limit=limit, batch_size=batch_size, seed=seed, defense=defense,
    )  # fmt: skip
    ctx = click.get_current_context()
    data = {"dataset": dataset_path, "allow_changed_data": allow_changed_data}
    data["accel"] = {"amp": amp, "channels_last": channels_last, "compile": compile_model}
    # With a defense, the naive record first, then the adaptive one beside it.
    wanted = [None] if adaptive == "none" else [None, adaptive]
    records = []
    for mode in wanted:
        settings = attack_settings(ctx, attack, **options, adaptive=mode)
        label = f"{attack} {norm}" + (f" {defense} {mode or 'naive'}" if defense else "")
        records.append(_record(run, settings, dev, label, data, force))
    if not main_rank:
        return  # rank 0 writes and prints
    if out == "-":
        dumped = [r.to_dict() for r in records]
        click.echo(json.dumps(dumped[0] if len(dumped) == 1 else dumped, indent=2))
        return
    if out:
        dumped = [r.to_dict() for r in records]
        runs.write_json(out, dumped[0] if len(dumped) == 1 else dumped)
    click.echo("\n\n".join(format_table(r) for r in records))


def _record(run, settings: AttackSettings, dev, label: str, data, force: bool) -> AttackRecord:
    """The stored record of ``settings``, else a fresh one (logged on rank 0).

    Rank 0's view of what is stored decides for every rank (their file systems may differ).
    """
    main_rank = distributed.is_main()
    record = distributed.broadcast(None if force else find_complete(run, settings))
    if record is not None:
        if main_rank:
            log(
                f"{run}/attacks/{record.name}.json already holds these settings; --force recomputes it"
            )
        return record
    record = _attack(run, settings, dev, label, data)
    if main_rank:
        log(f"wrote {run}/attacks/{record.name}.json and {run}/figures/{record.name}.png")
    return record


def _attack(run, settings: AttackSettings, device, label: str, data) -> AttackRecord:
    """`attack_run` with a progress bar (rank 0 only); a Ctrl-C exits 130 with a note."""

    def on_round(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    # The bar is opened inside the handler: an interrupt as it appears is handled too.
    try:
        bar = progress(None, label, "sample", disable=None if distributed.is_main() else True)
        try:
            return attack_run(run, settings, device=device, progress=on_round, **data)
        finally:
            bar.close()
    except KeyboardInterrupt:
        if distributed.is_main():
            log(
                "interrupted; the samples done so far are kept: run the command again to "
                f"continue ({run})"
            )
        sys.exit(130)
