"""Scale benchmark (issue 5): attack evaluation time and peak memory against the number of samples.

`robustness_curve` (PGD, a few epsilons) over 1k, 4k and 16k MNIST-shaped
samples with a small trained MLP on `(1, 28, 28)`: the time per sample should
stay flat (linear growth) and so should the evaluation's peak memory (growth
<= 10% from 1k to 16k), because batches stream.

Each measurement runs in a fresh subprocess holding the data as a user would
(float32 tensors on the CPU). Right before the call the kernel's peak-RSS
counter is reset (`/proc/self/clear_refs` <- 5 resets VmHWM on Linux); right
after, VmHWM is read from `/proc/self/status`. Reported: the peak above the
RSS just before the call (what the evaluation itself adds) and the absolute
peak (interpreter, torch, model and data included).

Run through `scripts/bench.py`; `python scripts/bench_scale.py [--quick]` runs this section alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import ctypes
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from bench_common import Row, Section, as_dataset, log, machine_line, mnist_like, set_threads
from safetensors.torch import load_file, save_file

import models
from advkit.devices import DEVICES, resolve_device
from advkit.evaluate import robustness_curve


@dataclass
class ScaleSettings:
    """Sizes of the scale benchmark.

    Attributes:
        sizes: Samples evaluated, smallest first (ratios are against the first).
        epsilons: L-inf budgets of the curve.
        steps: PGD steps.
        batch_size: Samples per attack call.
        repeats: Rounds; each runs every size once, each in a fresh process.
        train_samples: Images the MLP is trained on first (one plain Adam loop).
        train_epochs: Epochs of that loop.
    """

    sizes: tuple[int, ...] = (1000, 4000, 16000)
    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    steps: int = 5
    batch_size: int = 256
    repeats: int = 3
    train_samples: int = 4000
    train_epochs: int = 2

    @classmethod
    def quick(cls) -> ScaleSettings:
        return cls(sizes=(500, 1000, 2000), steps=3, train_samples=2000, train_epochs=1)


def _memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the last reset) of this process, in kB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def train_small_mlp(s: ScaleSettings, path: Path, device: torch.device) -> dict:
    """Train the MLP on MNIST-shaped images; save its weights to `path`; return how to rebuild it."""
    data = as_dataset(*mnist_like(s.train_samples, seed=1))
    mean, std = data.channel_stats()
    spec = {"name": "mlp", "input_shape": [1, 28, 28], "num_classes": 10, "mean": mean, "std": std}
    torch.manual_seed(0)
    net = models.build("mlp", (1, 28, 28), 10, mean=mean, std=std).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(0)
    x, y = data.x_train.to(device), data.y_train.to(device)
    for _ in range(s.train_epochs):
        for idx in torch.randperm(len(y), generator=shuffle).split(64):
            idx = idx.to(device)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))
    return spec


def _strict_allocator() -> bool:
    """Make glibc return freed memory to the system at once, so RSS follows live memory.

    By default glibc raises its mmap threshold as large blocks are freed and
    then keeps freed memory for reuse, so how much RSS a call adds depends on
    what ran before it. A fixed threshold (glibc's own initial 128 KiB) puts
    every tensor above it in its own mapping, given back on free; trimming
    releases what is cached now. Returns False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        ok = libc.mallopt(m_mmap_threshold, 128 * 1024) == 1
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def _measured(call: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Run `call` with the peak-RSS counter reset right before it; seconds and MB."""
    gc.collect()
    before = _memory_kb()["VmRSS"]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    _reset_peak()
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    after = _memory_kb()
    result = {
        "seconds": seconds,
        "rss_before_mb": before / 1024,
        "peak_mb": after["VmHWM"] / 1024,
        "peak_above_mb": (after["VmHWM"] - before) / 1024,
    }
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure(job: dict) -> dict:
    """In a fresh process: `robustness_curve` over `job["n"]` samples, timed, with its peak RSS.

    After a warm-up on one batch, the curve over all `n` samples runs first
    with glibc's default allocator (its time and peak: what a user gets).
    Three curves over the first `job["small"]` samples follow right away, so
    the time per sample is also compared within this process: the load of a
    shared machine drifts between processes. Last, the curve over all `n`
    runs again with the strict allocator, for its peak only: the
    evaluation's live working set, free of the allocator's caching.
    """
    device = torch.device(job["device"])
    spec = job["model"]
    net = models.build(
        spec["name"], spec["input_shape"], spec["num_classes"], mean=spec["mean"], std=spec["std"]
    )
    net.load_state_dict(load_file(job["weights"]))
    net.to(device).eval()
    # The data as a user holds them: float32 (N, 1, 28, 28) and int64 tensors on the CPU.
    x = torch.from_numpy(np.load(job["x"]))
    y = torch.from_numpy(np.load(job["y"]))
    options = {"norm": "linf", "steps": job["steps"], "batch_size": job["batch_size"], "seed": 0}
    few = slice(0, job["batch_size"])
    robustness_curve(net, x[few], y[few], job["epsilons"], **options)  # warm-up
    found: dict[str, Any] = {}

    def curve(n: int) -> None:
        found["accuracy"] = robustness_curve(net, x[:n], y[:n], job["epsilons"], **options).accuracy

    n = len(x)
    result: dict[str, Any] = {"n": n, **_measured(lambda: curve(n), device)}
    result["accuracy"] = found["accuracy"]
    result["data_mb"] = (x.numel() * x.element_size() + y.numel() * y.element_size()) / 2**20
    small = [_measured(lambda: curve(job["small"]), device)["seconds"] for _ in range(3)]
    result["small_seconds"] = statistics.median(small)
    if _strict_allocator():
        result["strict"] = _measured(lambda: curve(n), device)
    return result


def run_child(job: dict) -> dict:
    """Run `measure(job)` in a fresh Python process and return its result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"scale child for n={job['n']} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_scale(s: ScaleSettings, device: torch.device) -> Section:
    """Evaluate every size in fresh processes, in alternating rounds; one section."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "mlp.safetensors"
        log(f"scale: training an MLP on {s.train_samples} MNIST-shaped images")
        spec = train_small_mlp(s, weights, device)
        base = {
            "model": spec,
            "weights": str(weights),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "epsilons": list(s.epsilons),
            "steps": s.steps,
            "batch_size": s.batch_size,
        }
        # Generated here, once: a child only loads its arrays (no data generation in its timing).
        data = as_dataset(*mnist_like(max(s.sizes), seed=2))
        files = {}
        for n in s.sizes:
            files[n] = {"x": str(Path(tmp) / f"x{n}.npy"), "y": str(Path(tmp) / f"y{n}.npy")}
            np.save(files[n]["x"], data.x_train[:n].numpy())
            np.save(files[n]["y"], data.y_train[:n].numpy())
        found: dict[int, list[dict]] = {n: [] for n in s.sizes}
        for r in range(s.repeats):
            for n in s.sizes if r % 2 == 0 else reversed(s.sizes):
                log(f"scale: round {r + 1}/{s.repeats}, {n} samples (fresh process)")
                found[n].append(run_child({**base, **files[n], "small": s.sizes[0]}))

    first = s.sizes[0]
    section = Section(
        f"Scale: robustness_curve over {', '.join(map(str, s.sizes))} MNIST-shaped samples"
    )
    for n in s.sizes:
        runs = found[n]
        section.rows.append(
            Row(
                f"time, {n} samples",
                [run["seconds"] for run in runs],
                ratios=[(run["seconds"] / n) / (run["small_seconds"] / first) for run in runs],
                target=("<=", 1.10) if n != first else None,
                note=f"ratio: time per sample / at {first}, same process",
            )
        )
    strict = all("strict" in run for runs in found.values() for run in runs)
    memory = [("peak_above_mb", "peak RSS above pre-call RSS, glibc default allocator", None)]
    if strict:
        memory.insert(0, ("strict", "peak RSS above pre-call RSS, strict allocator", ("<=", 1.10)))
    for key, what, target in memory:
        for n in s.sizes:

            def peak(run: dict, key: str = key) -> float:
                return run[key]["peak_above_mb"] if key == "strict" else run[key]

            runs, small = found[n], found[first]
            growth = [peak(a) / peak(b) for a, b in zip(runs, small, strict=True)]
            section.rows.append(
                Row(
                    f"{what}, {n} samples",
                    [peak(run) for run in runs],
                    unit="MB",
                    ratios=growth,
                    target=target if n == s.sizes[-1] else None,
                    note=f"ratio: / at {first}",
                )
            )
    for n in s.sizes:
        runs = found[n]
        data_mb = runs[0]["data_mb"]
        section.rows.append(
            Row(
                f"absolute peak RSS, default allocator, {n} samples (data {data_mb:.1f} MB)",
                [run["peak_mb"] for run in runs],
                unit="MB",
            )
        )
        if "cuda_peak_mb" in runs[0]:
            section.rows.append(
                Row(
                    f"CUDA peak allocated, {n} samples",
                    [run["cuda_peak_mb"] for run in runs],
                    unit="MB",
                )
            )
    accuracy = {n: found[n][0]["accuracy"] for n in s.sizes}
    section.after.append(
        f"PGD-{s.steps}, L-inf, epsilons {list(s.epsilons)}, batches of {s.batch_size}, "
        "incremental (the default), one MLP trained on MNIST-shaped images; the data "
        "stay float32 tensors on the CPU, loaded before the call. Each measurement is a "
        "fresh process: after a warm-up curve on one batch, VmHWM is reset "
        "(`/proc/self/clear_refs` <- 5) right before the call and read from "
        "`/proc/self/status` right after; 'peak above pre-call' is VmHWM minus the RSS "
        "just before the call, the memory the evaluation itself adds. In that process "
        "the curve runs first over all samples with glibc's default "
        "allocator: its time and its peak are what a user gets, but that peak also "
        "depends on how much freed memory the allocator kept from earlier calls (it "
        f"varies from run to run). Then 3 times over the first {first} samples: the time per "
        "sample is compared within the process, since the load of this shared machine "
        f"drifts between processes (the {first} row's ratio shows the noise left). "
        "Last, over all samples again, for the target, with a strict allocator (`mallopt(M_MMAP_THRESHOLD, "
        "128 KiB)` and `malloc_trim(0)`: every tensor above 128 KiB gets its own "
        "mapping, returned on free), so the peak is the evaluation's live working "
        "set: one batch's attack plus whatever is kept per sample. The absolute peak "
        "adds the interpreter, torch, the model and the data. Robust accuracy "
        "(round 1): "
        + "; ".join(f"{n}: {[round(a, 3) for a in acc]}" for n, acc in accuracy.items())
        + "."
    )
    return section


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Smaller sizes and fewer steps.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
@click.option("--child", "child", hidden=True, help="Internal: run one measurement (JSON job).")
def main(quick: bool, device: str, threads: int | None, child: str | None) -> None:
    """Time and measure peak memory of robustness_curve over growing sample counts."""
    if child is not None:
        job = json.loads(child)
        set_threads(job["threads"])
        click.echo(json.dumps(measure(job)))
        return
    set_threads(threads)
    dev = resolve_device(device)
    log(machine_line(dev))
    click.echo(bench_scale(ScaleSettings.quick() if quick else ScaleSettings(), dev).markdown())


if __name__ == "__main__":
    main()
