"""``advkit transfer``: craft on source runs, measure victim runs on the same 8-bit images."""

from __future__ import annotations

import math
import os
import sys
from fractions import Fraction
from pathlib import Path

import click

import attacks

from ..records import SPLITS
from ..transfer import (
    TransferRecord,
    TransferSettings,
    default_path,
    evaluate_images,
    transfer_runs,
    write_record,
)
from ..transfer_figure import eps_label
from .attack import MAX_EPSILONS
from .common import Failure, device_option, fail_cleanly, log, not_empty, pick_device, progress

# Options of `advkit transfer` that belong to the attack, by the attack's own keyword;
# one the user types for an attack that does not take it is an error.
ATTACK_OPTIONS = ("steps", "step_size", "decay", "diversity", "translation", "loss")


def parse_budgets(ctx, param, value: str | None) -> list[Fraction] | None:
    """``8/255`` or ``0.01,4/255,8/255``: numbers or fractions, increasing, >= 0."""
    if value is None:
        return None
    try:
        eps = [Fraction(v.strip()) for v in value.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(
            f"{value!r} is not a list of numbers or fractions like 8/255 or 0.01,4/255"
        ) from None
    if not eps:
        raise click.BadParameter("give at least one budget")
    if len(eps) > MAX_EPSILONS:
        raise click.BadParameter(f"at most {MAX_EPSILONS} budgets, got {len(eps)}")
    if any(e < 0 for e in eps) or any(b <= a for a, b in zip(eps, eps[1:], strict=False)):
        raise click.BadParameter(f"{value!r}: budgets must be >= 0 and strictly increasing")
    return eps


def parse_sources(ctx, param, value: tuple[str, ...]) -> list[list[str]]:
    """Each ``--source``: one run, or ``RUN,RUN`` for an ensemble of them."""
    groups = [[p.strip() for p in v.split(",")] for v in value]
    for group in groups:
        if not all(group):
            raise click.BadParameter("an empty run in a comma-separated list")
    return groups


def format_table(record: TransferRecord) -> str:
    """The matrix per budget: victim accuracy on the 8-bit images, with 95% intervals."""
    s = record.settings
    options = ", ".join(f"{k}={v}" for k, v in s.options.items())
    head = s.attack if s.attack else f"images in {record.images}"
    lines = [
        f"transfer: {head}{f' ({options})' if options else ''}; {record.n_samples} "
        f"{record.dataset} {s.split} samples, victim accuracy on 8-bit images [95% interval]"
    ]
    corner = "source \\ victim"
    width = max(len(corner), *(len(x) for x in record.sources))
    cells = [max(22, len(v) + 1) for v in record.victims]
    header = "".join(f"{v:>{w}}" for v, w in zip(record.victims, cells, strict=True))
    clean = "".join(f"{a:>{w}.4f}" for a, w in zip(record.clean_accuracy, cells, strict=True))
    for i, eps in enumerate(s.epsilons):
        extra = "  source itself  max L-inf" if record.source_correct else "  max L-inf"
        lines += ["", eps_label(eps), f"{corner:<{width}}{header}{extra}"]
        lines.append(f"{'clean':<{width}}{clean}")
        for j, source in enumerate(record.sources):
            row = "".join(
                f"{f'{a:.4f} [{lo:.3f}, {hi:.3f}]':>{w}}"
                for a, (lo, hi), w in zip(
                    record.accuracy[i][j], record.intervals[i][j], cells, strict=True
                )
            )
            if record.source_correct:
                row += f"{record.source_correct[i][j] / record.n_samples:>15.4f}"
            lines.append(f"{source:<{width}}{row}{record.max_linf[i][j] * 255:>9.2f}/255")
    return "\n".join(lines)


def transfer_settings(ctx: click.Context, attack: str | None, **values) -> TransferSettings:
    """The settings of the command line: the attack's own options only if it takes them."""
    takes = {} if attack is None else TransferSettings.make(attack=attack, epsilons=[0]).options
    options = {}
    for name in ATTACK_OPTIONS:
        value = values.pop(name)
        typed = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if name in takes and value is not None:
            options[name] = value
        elif typed:
            flag = "--" + name.replace("_", "-")
            what = f"--attack {attack}" if attack else "--from-images"
            raise click.UsageError(f"{flag} does not apply to {what}")
    return TransferSettings.make(attack=attack, **values, **options)


@click.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    callback=parse_sources,
    metavar="RUN[,RUN...]",
    help="Run(s) to craft on; several comma-separated runs are one ensemble (logits "
    "averaged). Repeat for more rows of the matrix.",
)
@click.option(
    "--victim",
    "victims",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Run to measure on the images (repeat for more).",
)
@click.option(
    "--attack",
    default="mifgsm",
    show_default=True,
    type=click.Choice(tuple(attacks.ATTACKS)),
    help="The attack, by its name in attacks.ATTACKS (untargeted, L-inf).",
)
@click.option(
    "--eps",
    "budgets",
    required=True,
    callback=parse_budgets,
    metavar="LIST",
    help="L-inf budgets: numbers or fractions, e.g. 8/255 or 4/255,8/255 (in units of --eps-unit).",
)
@click.option(
    "--eps-unit",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="What a budget of 1 means: 255 to give --eps in 8-bit levels (--eps 8 --eps-unit 255).",
)
@click.option("--steps", type=click.IntRange(min=1), help="Attack steps [default: the attack's].")
@click.option(
    "--step-size", type=click.FloatRange(min=0, min_open=True), help="[default: eps / steps]"
)
@click.option(
    "--decay", type=click.FloatRange(min=0), help="MI-FGSM momentum; 0 is I-FGSM [default: 1]."
)
@click.option(
    "--diversity",
    type=click.FloatRange(0, 1),
    help="Input diversity (DIM): chance of a random resize-and-pad per step [default: 0].",
)
@click.option(
    "--translation",
    type=click.IntRange(min=0),
    help="Translation invariance (TI): odd kernel size, 0 for off [default: 0].",
)
@click.option("--loss", type=click.Choice(attacks.LOSSES), help="[default: ce]")
@click.option(
    "--save-images",
    type=click.Path(file_okay=False),
    callback=not_empty,
    help="Write the 8-bit images here as <class>/<class><index>.png and measure the "
    "victims on the files read back (one --source, one --eps).",
)
@click.option(
    "--from-images",
    type=click.Path(exists=True, file_okay=False),
    help="Measure the victims on PNG files in that layout instead of crafting (no "
    "--source; the budget is checked against --eps).",
)
@click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS))
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N samples of the split.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(-(2**63), 2**64 - 1),
    help="Seeds the attack's random draws (input diversity).",
)
@device_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    callback=not_empty,
    help="Where to write the JSON record (the heatmap goes beside it as .png) "
    "[default: FIRST_RUN/transfers/NAME.json].",
)
@fail_cleanly
def transfer_command(sources, victims, budgets, eps_unit, save_images, from_images, out, device,
                     **values):  # fmt: skip
    """Craft adversarial images on source runs; measure victim runs on them.

    Every budget and source gives one row of victim accuracies, measured on the
    images rounded to 8-bit levels inside the budget (what a PNG file holds),
    so the numbers are those of submitted images. Prints the matrix, writes a
    JSON record and a heatmap.

    \b
    advkit transfer --source runs/mlp,runs/bncnn --victim runs/attention --eps 8/255
    advkit transfer --source runs/mlp --victim runs/bncnn --eps 8 --eps-unit 255 \\
        --diversity 0.5 --save-images adv/
    advkit transfer --from-images adv/ --victim runs/attention --eps 8/255
    """
    if bool(sources) == bool(from_images):
        raise click.UsageError("give --source runs to craft on, or --from-images, not both")
    if from_images and save_images:
        raise click.UsageError("--save-images does not apply to --from-images")
    if save_images and (len(sources) > 1 or len(budgets) > 1):
        raise click.UsageError("--save-images needs exactly one --source and one --eps")
    for path in (p for group in sources for p in group):
        if not os.path.isdir(path):
            raise click.BadParameter(
                f"run directory {path!r} does not exist", param_hint="--source"
            )
    if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise Failure(f"--out {out}: the directory {os.path.dirname(out) or '.'} does not exist")
    ctx = click.get_current_context()
    epsilons = [float(Fraction(e) / Fraction(eps_unit)) for e in budgets]
    if any(not math.isfinite(e) for e in epsilons):
        raise click.BadParameter("budgets must be finite", param_hint="--eps")
    attack = None if from_images else values.pop("attack")
    values.pop("attack", None)
    settings = transfer_settings(ctx, attack, epsilons=epsilons, **values)
    dev = pick_device(device)
    if from_images:
        record = evaluate_images(from_images, victims, settings, device=dev)
    else:
        record = _craft(sources, victims, settings, dev, save_images)
    path = Path(out) if out else default_path(record, (sources[0][0] if sources else victims[0]))
    figure = write_record(record, path)
    click.echo(format_table(record))
    log(f"wrote {path} and {figure}")


def _craft(sources, victims, settings: TransferSettings, device, save_images) -> TransferRecord:
    """`transfer_runs` with a progress bar; a Ctrl-C exits 130 with a note."""

    def on_cell(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        bar = progress(None, f"transfer {settings.attack}", "source")
        try:
            return transfer_runs(
                sources, victims, settings, device=device, save_images=save_images,
                progress=on_cell,
            )  # fmt: skip
        finally:
            bar.close()
    except KeyboardInterrupt:
        log("interrupted; no record was written")
        sys.exit(130)
