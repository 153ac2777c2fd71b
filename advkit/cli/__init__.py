"""The ``advkit`` command: train, attack, report.

Importing this package prepares the process for the command line, before
torch loads: OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE``,
unless set) instead of spinning, which on a shared machine made every step
wait for the busiest process (see BENCHMARKING.md). ``advkit`` (the console
script) and ``python -m advkit`` both start here; ``import advkit`` does not
load torch, so nothing before this line can have started OpenMP.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import warnings  # noqa: E402

import click  # noqa: E402
import torch  # noqa: E402

from .. import __version__  # noqa: E402
from .attack import attack_command  # noqa: E402
from .models import models_command  # noqa: E402
from .report import report_command  # noqa: E402
from .train import train_command  # noqa: E402
from .transfer import transfer_command  # noqa: E402

# click >= 8.2 raises this for a group called without arguments.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", None)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (a suspicious model, a broken attack) as one line on stderr.

    Python's default adds the source line that warned, which reads like a traceback.
    """
    click.echo(f"Warning: {' '.join(str(message).split())}", err=True)


class OneLineErrors(click.Group):
    """A group whose every error is one ``Error: ...`` line on stderr, exit status 2.

    click prints a usage block before usage errors; on a terminal one line that
    names the problem and the ``--help`` to read is easier to act on, and it
    keeps stderr parseable for scripts.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                rv = super().main(args, prog_name, complete_var, False, **extra)
            sys.stdout.flush()  # a reader that stopped early (| head) fails here, not at exit
        except BrokenPipeError:
            _quiet_broken_pipe()
        except click.UsageError as e:
            if _NO_ARGS_IS_HELP is not None and isinstance(e, _NO_ARGS_IS_HELP):
                # Plain `advkit`: the help, as click < 8.2 printed it, not an error.
                click.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
                sys.exit(0)
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"Error: {' '.join(e.format_message().split())}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"Error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _quiet_broken_pipe() -> None:
    """Exit 1 without a word when stdout's reader went away (Python's documented recipe).

    Python flushes stdout again at exit; pointing it at /dev/null keeps that
    flush from printing a second BrokenPipeError.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (a test runner's)
        pass
    sys.exit(1)


@click.group(
    cls=OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="advkit")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=f"CPU threads for torch [default: torch's, {torch.get_num_threads()} here]; "
    "recorded with every time measured.",
)
def main(threads: int | None) -> None:
    """Train course classifiers, attack them with FGSM and PGD, report robustness curves.

    \b
    advkit train   --model bncnn --optimizer adam --out runs/bncnn-adam
    advkit attack  runs/bncnn-adam --attack pgd --norm linf --eps 0,0.05,0.1,0.2
    advkit report  runs/* --out report/
    advkit transfer --source runs/mlp,runs/bncnn --victim runs/attention --eps 8/255
    """
    if threads is not None:
        torch.set_num_threads(threads)


main.add_command(train_command, "train")
main.add_command(attack_command, "attack")
main.add_command(report_command, "report")
main.add_command(models_command, "models")
main.add_command(transfer_command, "transfer")
