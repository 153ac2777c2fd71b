"""Run advkit's benchmark suites; print their tables and update them in BENCHMARKS.md.

    python -m scripts.bench --out BENCHMARKS.md      # every suite (python3 tasks.py bench)
    python -m scripts.bench --only train --quick     # one suite, a smoke version
    python -m scripts.bench --device cuda --out BENCHMARKS-cuda.md

`--out` replaces only the generated regions of the file (`<!-- bench:NAME:start -->`
... `end`): the methodology written around them stays. A new suite is one module
with a function `(device, quick) -> list[Section]`, added to SUITES below.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch

from advkit.devices import DEVICES, resolve_device
from advkit.runs import write_text

from .harness import Section, log, machine_line, suite_markdown, targets_table, update_document

Suite = Callable[[torch.device, bool], list[Section]]
# Suite name -> its module in this package, imported only when it runs: a suite's
# peer libraries (torchattacks, pyautoattack) need not be installed to run another.
SUITES = (
    "attacks", "train", "scale", "curve", "strong", "transfer", "defenses", "distributed", "gpu",
)  # fmt: skip


def load_suite(name: str) -> Suite:
    return importlib.import_module(f"{__package__}.{name}").suite


NEW_DOCUMENT = "# advkit benchmarks\n\nMethodology: see BENCHMARKS.md in the repository.\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--only", multiple=True, type=click.Choice(list(SUITES)), help="Only this suite (repeatable)."
)
@click.option("--quick", is_flag=True, help="A fast smoke version of each suite.")
@click.option("--out", type=click.Path(dir_okay=False), help="Update the tables in this file.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
def main(
    only: tuple[str, ...], quick: bool, out: str | None, device: str, threads: int | None
) -> None:
    """Run the benchmark suites and print (and, with --out, write) their tables."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    command = " ".join(["python -m scripts.bench", *sys.argv[1:]])
    regions, printed = {}, []
    for name in only or SUITES:
        log(f"suite {name}: {machine_line(dev)}")
        started = time.perf_counter()
        sections = load_suite(name)(dev, quick)
        seconds = time.perf_counter() - started
        regions[f"targets-{name}"] = targets_table(sections)
        regions[name] = suite_markdown(sections, machine_line(dev), command, seconds)
        printed += [f"## {name}", regions[f"targets-{name}"], regions[name]]
    click.echo("\n\n".join(printed))
    if out:
        path = Path(out)
        write_text(
            path, update_document(path.read_text() if path.exists() else NEW_DOCUMENT, regions)
        )
        log(f"updated {out}")


if __name__ == "__main__":
    main()
