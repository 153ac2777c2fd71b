"""What the benchmark scripts share: interleaved timing, result rows, tables, trained models, data.

Timing follows shared/BENCHMARKING.md: every comparison is timed in the same
process, on the same inputs, in alternating rounds (A B A B ...), after a
warm-up, and reported as the median of the per-round ratios with its min-max
spread. Absolute times on this shared 2-core machine drift by 20-50% between
runs; same-round ratios by about 10%.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import models
from advkit import load_run
from advkit.data import Dataset, load_dataset
from advkit.train import TrainConfig, train

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, stamped with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def set_threads(threads: int | None) -> None:
    """Use `threads` torch threads (None keeps torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    repeats: int = 3,
    budget: float = 0.0,
    max_repeats: int = 15,
    warmup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Time each function once per round, in alternating rounds.

    Every function is first called once through `warmup` (default: itself),
    which pays for allocation and kernel selection. Round r calls the
    functions in their given order when r is even and in reverse when odd
    (A B, B A, ...), so a slow drift of the machine hits both sides alike.
    At least `repeats` rounds run; cheap comparisons get more, up to
    `max_repeats`, until the rounds have taken `budget` seconds.

    Returns:
        Per name, the seconds of each round.
    """
    for fn in (warmup or fns).values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    spent, rounds = 0.0, 0
    while rounds < repeats or (spent < budget and rounds < max_repeats):
        for name in names if rounds % 2 == 0 else names[::-1]:
            seconds = timed(fns[name], device)
            times[name].append(seconds)
            spent += seconds
        rounds += 1
    return times


def per_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The ratio a / b of each round."""
    return [x / y for x, y in zip(a, b, strict=True)]


@dataclass
class Row:
    """One line of a results table.

    Attributes:
        what: What was measured.
        values: The measured quantity, one value per repetition.
        unit: `"s"`, `"samples/s"`, `"MB"`, `"count"` or `""` (a plain number).
        ratios: The per-round ratio compared against `target`, or None when the
            row has no comparison.
        target: `("<=", 1.1)` or `(">=", 3.0)`: the median (of `ratios`, else of
            `values`) must satisfy it; None for a row reported for information.
        note: Shown after `what`, e.g. what the ratio divides.
    """

    what: str
    values: list[float]
    unit: str = "s"
    ratios: list[float] | None = None
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def compared(self) -> list[float]:
        return self.ratios if self.ratios is not None else self.values

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        value = statistics.median(self.compared)
        return value <= bound if op == "<=" else value >= bound

    def cells(self) -> list[str]:
        ratio = "—" if self.ratios is None else f"{statistics.median(self.ratios):#.3g}"
        target = "—" if self.target is None else f"{self.target[0]} {self.target[1]:g}"
        met = {None: "—", True: "yes", False: "**no**"}[self.met]
        spread = self.compared
        fmt = _format_ratio if self.ratios is not None else lambda v: _format(v, self.unit)
        what = f"{self.what} ({self.note})" if self.note else self.what
        return [
            what,
            _format(self.median, self.unit),
            ratio,
            target,
            met,
            f"{fmt(min(spread))} - {fmt(max(spread))} (n={len(spread)})",
        ]


def _format_ratio(value: float) -> str:
    return f"{value:#.3g}"


def _format(value: float, unit: str) -> str:
    if not np.isfinite(value):
        return str(value)
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "samples/s":
        return f"{value:,.0f} samples/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass
class Section:
    """A titled results table, with free markdown (notes, extra tables) after it."""

    title: str
    rows: list[Row] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        head = ["what", "median", "ratio", "target", "met?", "spread min - max"]
        lines = [f"## {self.title}", "", *markdown_table(head, [r.cells() for r in self.rows])]
        for block in self.after:
            lines += ["", block]
        return "\n".join(lines) + "\n"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def command_line() -> str:
    """How this benchmark was started, as a shell command."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    prefix = f"OMP_WAIT_POLICY={policy} " if policy else ""
    return prefix + " ".join(["python", *sys.argv])


def report(sections: Sequence[Section], machine: str, command: str, footer: str = "") -> str:
    """The markdown document: machine, command, every target at a glance, then every section."""
    targets = [r for section in sections for r in section.rows if r.target is not None]
    summary = markdown_table(
        ["what", "ratio", "target", "met?"],
        [[f"{r.what} ({r.note})" if r.note else r.what, *r.cells()[2:5]] for r in targets],
    )
    lines = [
        "# advkit benchmarks",
        "",
        f"Machine: {machine}",
        "",
        f"Command: `{command}`",
        "",
        "Every figure is a median over rounds after a warm-up; every ratio is the median "
        "of ratios measured in the same round on the same inputs (shared/BENCHMARKING.md). "
        "The spread column gives the min - max over rounds of the ratio (or of the value "
        "when there is no ratio).",
        "",
    ]
    if footer:
        lines += [footer, ""]
    lines += ["## Targets", "", *summary, ""]
    return "\n".join(lines) + "\n" + "\n".join(s.markdown() for s in sections)


def machine_line(device: torch.device) -> str:
    """Cores, CPU, torch version, threads, device: what every table depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [
        f"CPU {cpu}, {os.cpu_count()} cores ({usable} usable)",
        f"torch {torch.__version__}",
        f"{torch.get_num_threads()} torch threads",
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        "flush-denormal off",
        f"device {device}",
    ]
    if device.type == "cuda":
        parts[-1] += f" ({torch.cuda.get_device_name(device)})"
    parts.append(f"Python {platform.python_version()}")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average at start {os.getloadavg()[0]:.1f}")
    return "; ".join(parts)


# --- models -------------------------------------------------------------------


def train_digits_models(
    names: Sequence[str], device: torch.device, epochs: int | None = None
) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """Train each model on digits with advkit's default recipe; return them and their test accuracy.

    Trained networks matter here: on clean inputs a confident network makes
    subnormal floats in the backward pass, and early stopping depends on how
    robust the network is. `epochs=None` is the default recipe
    (`models.DEFAULT_EPOCHS`); fewer is a quick look.
    """
    data = load_dataset("digits")
    trained, accuracy = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            log(f"training {name} on digits ({epochs or models.DEFAULT_EPOCHS[name]} epochs)")
            out = Path(tmp) / name
            summary = train(
                TrainConfig(model=name, epochs=epochs), out, dataset=data, device=device
            )
            trained[name], _ = load_run(out, device=device)
            accuracy[name] = summary["test_accuracy"]
    return trained, accuracy


# --- MNIST-shaped data ----------------------------------------------------------


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` MNIST-shaped digits: uint8 `(n, 28, 28)` images and int64 labels.

    Nothing can be downloaded here, so these are scikit-learn's 8x8 digits
    scaled up to a 20x20 box inside a 28x28 canvas (as MNIST centers its
    digits), shifted by up to 2 pixels and with a little noise: learnable,
    mostly dark pixels, the sizes and dtypes of MNIST.
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    pick = rng.integers(0, len(digits.target), n)
    small = torch.from_numpy(digits.images[pick].astype(np.float32) / 16.0)[:, None]
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)[:, 0]
    canvas = torch.zeros(n, 28, 28)
    shifts = rng.integers(-2, 3, (n, 2))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            canvas[rows, 4 + dy : 24 + dy, 4 + dx : 24 + dx] = big[rows]
    noise = torch.from_numpy(rng.normal(0.0, 0.05, (n, 28, 28)).astype(np.float32))
    images = ((canvas + noise).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, digits.target[pick].astype(np.int64)


def write_idx_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write MNIST's four IDX files (unpacked, as torchvision reads them) under `root/MNIST/raw`."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    x, y = mnist_like(n_train + n_test, seed)
    parts = {"train": (x[:n_train], y[:n_train]), "t10k": (x[n_train:], y[n_train:])}
    for prefix, (images, labels) in parts.items():
        header = np.array([0x803, len(images), 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([0x801, len(labels)], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            header + labels.astype(np.uint8).tobytes()
        )
    return root


def as_dataset(images: np.ndarray, labels: np.ndarray, n_val: int = 0) -> Dataset:
    """Float32 `(N, 1, 28, 28)` tensors in [0, 1], as advkit holds data; the last `n_val` for validation."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(labels)
    n = len(y) - n_val
    return Dataset("mnist-like", x[:n], y[:n], x[n:], y[n:], x[n:], y[n:], num_classes=10)
