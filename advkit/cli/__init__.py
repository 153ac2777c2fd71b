"""The ``advkit`` command: train, attack, report."""

import click

from .. import __version__
from .models import models_command
from .train import train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="advkit")
def main() -> None:
    """Train course classifiers, attack them with FGSM and PGD, report robustness curves.

    \b
    advkit train   --model bncnn --optimizer adam --out runs/bncnn-adam
    advkit attack  runs/bncnn-adam --attack pgd --norm linf --eps 0,0.05,0.1,0.2
    advkit report  runs/* --out report/
    """


main.add_command(train_command, "train")
main.add_command(models_command, "models")
