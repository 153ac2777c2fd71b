"""``advkit models``: the available models and their sizes."""

from __future__ import annotations

import click
import torch

import models

from .common import fail_cleanly

# Sizes beyond these are typos: the models keep per-channel Python lists (a
# billion channels took minutes and gigabytes to build, even on the meta device).
MAX_CHANNELS = 1024
MAX_SIDE = 2**16


def _shape(ctx, param, value: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not C,H,W (e.g. 1,8,8)") from None
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"{value!r} is not C,H,W with positive sizes (e.g. 1,8,8)")
    if shape[0] > MAX_CHANNELS or max(shape[1:]) > MAX_SIDE:
        raise click.BadParameter(
            f"{value!r}: at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side"
        )
    return shape  # type: ignore[return-value]


@click.command()
@click.option(
    "--input-shape",
    default="1,8,8",
    show_default=True,
    callback=_shape,
    help="C,H,W of the inputs.",
)
@click.option("--num-classes", default=10, show_default=True, type=click.IntRange(min=2))
@fail_cleanly
def models_command(input_shape, num_classes):
    """List the models with their parameter counts and default epochs."""
    click.echo(
        f"{'model':<10} {'parameters':>12} {'epochs':>7}   (input {input_shape}, {num_classes} classes)"
    )
    for name in models.available():
        # On the meta device: counts the parameters of any size without allocating them.
        with torch.device("meta"):
            net = models.build(name, input_shape=input_shape, num_classes=num_classes)
        click.echo(
            f"{name:<10} {net.num_parameters():>12,} {models.DEFAULT_EPOCHS.get(name, 20):>7}"
        )
