"""What every command shares: error handling, option types, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
from tqdm import tqdm

from ..devices import DEVICES, resolve_device


class Failure(click.ClickException):
    """An error found after parsing: prints ``Error: ...`` and exits with status 2."""

    exit_code = 2


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def fail_cleanly(func: Callable) -> Callable:
    """Turn the library's ValueErrors (bad settings, missing runs, bad data) into exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            raise Failure(one_line(e)) from None

    return wrapper


def device_option(func: Callable) -> Callable:
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        type=click.Choice(DEVICES),
        help="Where to run: auto picks CUDA, then Apple MPS, then the CPU.",
    )(func)


def pick_device(name: str):
    try:
        return resolve_device(name)
    except ValueError as e:
        raise Failure(one_line(e)) from None


def progress(
    total: int | None = None, desc: str = "", unit: str = "it", leave: bool = False
) -> tqdm:
    """A progress bar on stderr (results go to stdout); hidden when stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
    )


def log(message: str) -> None:
    click.echo(message, err=True)
