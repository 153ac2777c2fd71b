"""What every suite shares: interleaved timing, result rows, markdown tables, the machine line.

A suite is a function `(device, quick) -> list[Section]`; a Section is a
titled table of Rows (what, median, ratio, target, met?, spread) plus extra
markdown blocks (notes, more tables). Timing follows shared/BENCHMARKING.md:
alternating rounds after a warm-up, medians of same-round ratios, min-max spread.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, stamped with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int = 3,
    budget: float = 0.0,
    max_repeats: int = 15,
    warmup: dict[str, Callable[[], object]] | None = None,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each function once per round, in alternating rounds; per name, each round's seconds.

    Each function is first called once untimed through `warmup` (default:
    itself). Round r calls the functions in order when r is even and in
    reverse when odd (A B, B A, ...), so a drift of the machine hits both
    sides alike. At least `repeats` rounds run; more, up to `max_repeats`,
    while the rounds so far took under `budget` seconds. `sync` runs before
    and after each call (GPU work), `clock` reads the time.
    """
    if repeats < 1 or max_repeats < repeats:
        raise ValueError(f"repeats must be in [1, max_repeats]; got {repeats}, {max_repeats}")
    for fn in (warmup or fns).values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names, spent, rounds = list(fns), 0.0, 0
    while rounds < repeats or (spent < budget and rounds < max_repeats):
        for name in names if rounds % 2 == 0 else names[::-1]:
            sync()
            start = clock()
            fns[name]()
            sync()
            times[name].append(clock() - start)
            spent += times[name][-1]
        rounds += 1
    return times


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The ratio a / b of each round."""
    return [x / y for x, y in zip(a, b, strict=True)]


def fmt(value: float, unit: str = "") -> str:
    """A value for a table: seconds as ms or s, rates and counts with separators."""
    if not math.isfinite(value):
        return str(value)
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    formats = {"samples/s": "{:,.0f} samples/s", "MB": "{:.1f} MB", "count": "{:,.0f}"}
    return formats.get(unit, "{:#.3g}").format(value)


@dataclass
class Row:
    """One line of a results table.

    Attributes:
        what: What was measured (`note`, e.g. what the ratio divides, follows it).
        values: The measured quantity, one value per round.
        unit: `"s"`, `"samples/s"`, `"MB"`, `"count"` or `""`.
        ratios: Per-round ratios to a reference, or None.
        target: `("<=", 1.1)` or `(">=", 3.0)` on the median of `ratios`
            (else of `values`); None for a row given for information.
    """

    what: str
    values: list[float]
    unit: str = "s"
    ratios: list[float] | None = None
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.ratios is None else statistics.median(self.ratios)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        value = statistics.median(self.ratios if self.ratios is not None else self.values)
        return value <= bound if op == "<=" else value >= bound

    def cells(self) -> list[str]:
        """what, median, ratio, target, met?, spread (of the ratios, else of the values)."""
        spread, unit = (self.ratios, "") if self.ratios is not None else (self.values, self.unit)
        return [
            f"{self.what} ({self.note})" if self.note else self.what,
            fmt(statistics.median(self.values), self.unit),
            "—" if self.ratio is None else fmt(self.ratio),
            "—" if self.target is None else f"{self.target[0]} {self.target[1]:g}",
            {None: "—", True: "yes", False: "**no**"}[self.met],
            f"{fmt(min(spread), unit)} - {fmt(max(spread), unit)} (n={len(spread)})",
        ]


HEAD = ["what", "median", "ratio", "target", "met?", "spread min - max"]


@dataclass
class Section:
    """A titled table of rows, then extra markdown blocks (notes, more tables)."""

    title: str
    rows: list[Row] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def markdown(self, level: int = 3) -> str:
        table = markdown_table(HEAD, [row.cells() for row in self.rows])
        return "\n\n".join([f"{'#' * level} {self.title}", table, *self.extra])


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def targets_table(sections: Sequence[Section]) -> str:
    """Every row with a target, at a glance: what, value, target, met?.

    The value is what the target is checked on: the median ratio where the row
    has ratios, else the median value (an accuracy, a difference of accuracies).
    """
    rows = [r for s in sections for r in s.rows if r.target is not None]
    cells = [(r.cells(), r.ratios is not None) for r in rows]
    return markdown_table(
        ["what", "value", "target", "met?"],
        [[c[0], c[2] if has_ratio else c[1], *c[3:5]] for c, has_ratio in cells],
    )


def machine_line(device: torch.device) -> str:
    """CPU, torch version, threads, load, OMP_WAIT_POLICY, device: what every number depends on."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    load = f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"CPU {cpu}, {os.cpu_count()} cores ({usable} usable); torch {torch.__version__}; "
        f"{torch.get_num_threads()} torch threads; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; flush-denormal off; "
        f"device {device}{name}; Python {platform.python_version()}{load}"
    )


def region(key: str, body: str) -> str:
    """`body` between the markers that `update_document` replaces."""
    return f"<!-- bench:{key}:start -->\n{body.strip()}\n<!-- bench:{key}:end -->"


def update_document(text: str, regions: dict[str, str]) -> str:
    """Replace each `key`'s region in `text` with `regions[key]` (its body); append missing ones.

    The text around the regions (BENCHMARKS.md's methodology) is kept as written.
    """
    for key, body in regions.items():
        start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
        if start in text and end in text.split(start, 1)[1]:
            before, rest = text.split(start, 1)
            text = before + region(key, body) + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + f"\n\n{region(key, body)}\n"
    return text


def suite_markdown(sections: Sequence[Section], machine: str, command: str, seconds: float) -> str:
    """One suite's generated part: how it was measured, then its sections."""
    head = f"Measured by `{command}` in {seconds:.0f} s. Machine: {machine}."
    return "\n\n".join([head, *(s.markdown() for s in sections)])
