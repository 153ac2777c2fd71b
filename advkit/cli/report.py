"""``advkit report``: one HTML page, CSV and Markdown tables and figures for many runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from ..report import NORM_NAMES, build_report, fmt
from .common import fail_cleanly, log, not_empty, progress


class _Bar:
    """A progress bar over the figures, opened when the report knows how many there are."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int, file: str) -> None:
        if self.bar is None:
            self.bar = progress(total, "report", "figure")
        self.bar.n = done
        if file:
            self.bar.set_postfix_str(file, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _table(result: dict) -> list[str]:
    """Run, model, optimizer, test accuracy and per norm the strongest attack's accuracy at ε*."""
    norms = list(result["eps"])
    head = f"{'run':<24} {'model':<10} {'optimizer':<9} {'test acc':>8}"
    for norm in norms:
        head += f" {NORM_NAMES[norm] + ' acc at ε=' + format(result['eps'][norm], 'g'):>18}"
        head += f" {'AUC ' + NORM_NAMES[norm]:>8}"
    lines = [head]
    for row in result["table"]:
        line = f"{row['run']:<24} {row['model']:<10} {row['optimizer']:<9} {fmt(row['test_accuracy']):>8}"
        for norm in norms:
            r = row["robust"].get(norm)
            value = "—" if r is None else ("≤" if r["bound"] else "") + fmt(r["accuracy"])
            line += f" {value:>18} {fmt(r['auc']) if r else '—':>8}"
        lines.append(line)
    return lines


@click.command()
@click.argument(
    "run_dirs", nargs=-1, required=True, metavar="RUN...", type=click.Path(path_type=Path)
)
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    callback=not_empty,
    help="Directory to write index.html, summary.csv, summary.md and figures/ into.",
)
@click.option(
    "--eps-linf",
    type=click.FloatRange(min=0, min_open=True),
    help="L∞ budget at which to compare robust accuracy [default: the middle of the budgets all "
    "runs share]; between two measured budgets a run's value is the upper bound at the one "
    "below, marked ≤.",
)
@click.option(
    "--eps-l2",
    type=click.FloatRange(min=0, min_open=True),
    help="L2 budget at which to compare robust accuracy [default: as for --eps-linf].",
)
@fail_cleanly
def report_command(run_dirs, out, eps_linf, eps_l2):
    """Report on trained and attacked runs: robustness curves, a model x optimizer
    comparison, training curves and adversarial examples, in one HTML page.

    Each RUN is a run directory (from `advkit train`, attacked with `advkit
    attack`), or a directory holding runs. Runs without attacks or unfinished
    runs are reported too (training curves), with a note.

    \b
    OUT/index.html    the report (works offline; figures beside it)
    OUT/summary.csv   one row per run x attack, the JSON numbers verbatim
    OUT/summary.md    the same, with 4 decimals
    OUT/figures/      the PNG figures

    \b
    advkit report runs/* --out report/
    advkit report runs/ --out report/ --eps-linf 0.1 --eps-l2 1.0
    """
    out = Path(out)
    bar = _Bar()
    try:
        result = build_report(run_dirs, out, eps_linf=eps_linf, eps_l2=eps_l2, progress=bar)
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted; the files already in {out} are complete: run the command again")
        sys.exit(130)
    finally:
        bar.close()
    for note in result["notes"]:
        log(f"note: {note}")
    click.echo(
        f"report: {result['index']} ({result['runs']} runs, {result['records']} attack records, "
        f"{len(result['figures'])} figures)"
    )
    for line in _table(result):
        click.echo(line)
