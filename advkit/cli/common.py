"""What every command shares: error handling, option types, progress bars."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click
from tqdm import tqdm

from .. import distributed
from ..devices import DEVICES, resolve_device


class Failure(click.ClickException):
    """An error found after parsing: prints ``Error: ...`` and exits with status 2."""

    exit_code = 2


def one_line(e: BaseException) -> str:
    # torch appends its C++ stack to some messages; the user needs the first part only.
    text = " ".join(str(e).split("\nException raised from")[0].split())
    return text or type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    """An allocation failure: a model or batch too large for this machine."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _overflow(e: BaseException) -> bool:
    """A number too large for torch's sizes or dtypes (e.g. ``--num-classes 2**64``)."""
    return isinstance(e, OverflowError) or (
        isinstance(e, (RuntimeError, TypeError)) and "overflow" in str(e).lower()
    )


def os_error_message(e: OSError) -> str:
    """An OSError as a sentence: ``cannot access PATH: No such file or directory``."""
    reason = e.strerror or one_line(e)
    if e.filename is not None and e.filename2 is not None:
        return f"cannot move {e.filename} to {e.filename2}: {reason}"
    if e.filename is not None:
        return f"cannot access {e.filename}: {reason}"
    return reason


def fail_cleanly(func: Callable) -> Callable:
    """Turn the library's ValueErrors (bad settings, missing runs, bad data), file
    system errors, allocation failures and size overflows into one ``Error:`` line
    and exit 2; any other exception is a bug and keeps its traceback. A closed
    stdout (``| head``) passes through: the command group exits quietly on it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, BrokenPipeError):
            raise
        except ValueError as e:
            raise Failure(one_line(e)) from None
        except OSError as e:  # a path that is a file, a full disk, ...
            raise Failure(os_error_message(e)) from None
        except (MemoryError, RuntimeError, TypeError, OverflowError) as e:
            if _out_of_memory(e):
                raise Failure(f"not enough memory ({_first_line(e)})") from None
            if _overflow(e):
                raise Failure(f"a size or number is too large ({_first_line(e)})") from None
            raise

    return wrapper


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(e).__name__


def not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse ``--out ''`` (an unset shell variable): it would name the current directory."""
    if value is not None and str(value) == "":
        raise click.BadParameter("must not be empty")
    return value


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


def join_process_group(device: str):
    """The device for this process; under ``torchrun``, join the process group first.

    Ranks other than 0 stay silent (no warnings); the group is left when the command ends.
    """
    dev = distributed.init_from_env(pick_device(device))
    if distributed.world()[1] > 1:
        click.get_current_context().call_on_close(distributed.finish)
        if not distributed.is_main():
            warnings.simplefilter("ignore")
    return dev


def progress(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    leave: bool = False,
    disable: bool | None = None,
) -> tqdm:
    """A progress bar on stderr (results go to stdout); hidden when stderr is not a terminal
    (`disable=None`) or when `disable` is True (ranks other than 0)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=disable,
    )


def log(message: str) -> None:
    click.echo(message, err=True)
