"""The whole benchmark suite: attacks (issue 3), training and scale (issue 5); writes BENCHMARKS.md.

    make bench                                    # = python scripts/bench.py --out BENCHMARKS.md
    python scripts/bench.py --quick               # a smoke version of every section
    python scripts/bench.py --device cuda --out BENCHMARKS-cuda.md
    python scripts/bench.py --only training       # one section

Sections, each a markdown table (what, median, ratio, target, met?, spread):

- attacks (`bench_attacks.py`): PGD per step and FGSM against one
  forward+backward; whole robustness curves, incremental against from scratch
  and torchattacks (time and work ratios), on an even and a dense-low L-inf
  grid, with random starts and without, with the robust accuracies side by side;
- training (`bench_train.py`): `advkit.train.train` against a plain PyTorch
  loop and torchvision's MNIST + DataLoader pipeline (batch 64, and 256);
- scale (`bench_scale.py`): `robustness_curve` time and peak memory over 1k,
  4k and 16k samples, each in a fresh process.

Progress goes to stderr, the tables to stdout (and to `--out`). The full run
takes about 7 minutes on 2 busy cores. Timing follows shared/BENCHMARKING.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import time
from pathlib import Path

import click
from bench_attacks import AttackSettings, run_attacks
from bench_common import Section, command_line, log, machine_line, report, set_threads
from bench_scale import ScaleSettings, bench_scale
from bench_train import TrainSettings, bench_training

from advkit.devices import DEVICES, resolve_device

SECTIONS = ("attacks", "training", "scale")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="A fast smoke version of every section.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the report here.")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(SECTIONS),
    help="Run only this section (repeatable) [default: all].",
)
def main(quick: bool, device: str, threads: int | None, out: str | None, only: tuple) -> None:
    """Run the benchmark suite and print (and write) the markdown report."""
    started = time.perf_counter()
    set_threads(threads)
    dev = resolve_device(device)
    machine = machine_line(dev)
    log(machine)
    wanted = only or SECTIONS
    sections: list[Section] = []
    if "attacks" in wanted:
        log("section: attacks")
        sections += run_attacks(AttackSettings.quick() if quick else AttackSettings(), dev)
    if "training" in wanted:
        log("section: training")
        sections.append(bench_training(TrainSettings.quick() if quick else TrainSettings(), dev))
    if "scale" in wanted:
        log("section: scale")
        sections.append(bench_scale(ScaleSettings.quick() if quick else ScaleSettings(), dev))
    load = (
        f", load average at the end {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    )
    footer = f"Wall time of the whole run: {time.perf_counter() - started:.0f} s{load}."
    text = report(sections, machine, command_line(), footer)
    click.echo(text)
    if out:
        Path(out).write_text(text)
        log(f"wrote {out}")
    log(footer)


if __name__ == "__main__":
    main()
