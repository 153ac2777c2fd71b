"""Scale suite: `robustness_curve` time and peak memory over growing sample counts.

Each measurement runs in a fresh process (`python -m scripts.bench.scale JOB`);
how peak memory is read is written in BENCHMARKS.md, section Scale.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import models
from advkit import robustness_curve

from .data import mnist_tensors
from .harness import Row, Section, log

ROOT = Path(__file__).resolve().parents[2]  # where `python -m scripts.bench.scale` resolves


@dataclass
class Settings:
    """Sizes of the scale suite: `sizes` smallest first (ratios are against the first); each
    round runs every size once, each in a fresh process; the MLP is trained first on
    `train_samples` images for `train_epochs` epochs of a plain Adam loop."""

    sizes: tuple[int, ...] = (1000, 4000, 16000)
    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    steps: int = 5
    batch_size: int = 256
    repeats: int = 3
    train_samples: int = 4000
    train_epochs: int = 2

    @classmethod
    def quick(cls) -> Settings:
        return cls(sizes=(500, 1000, 2000), steps=3, train_samples=2000, train_epochs=1)


def train_mlp(s: Settings, path: Path, device: torch.device) -> dict:
    """Train the MLP on MNIST-shaped images, save its weights to `path`; how to rebuild it."""
    x, y = mnist_tensors(s.train_samples, seed=1)
    spec = {"input_shape": [1, 28, 28], "num_classes": 10}
    spec |= {"mean": [x.mean().item()], "std": [max(x.std().item(), 1e-3)]}
    torch.manual_seed(0)
    net = models.build("mlp", **spec).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(0)
    x, y = x.to(device), y.to(device)
    for _ in range(s.train_epochs):
        for idx in torch.randperm(len(y), generator=shuffle).split(64):
            loss = F.cross_entropy(net(x[idx.to(device)]), y[idx.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))
    return spec


def _memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the last reset) of this process, in kB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _strict_allocator() -> bool:
    """Make glibc return freed memory at once (mmap threshold 128 KiB, trim); False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
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
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, after = time.perf_counter() - start, _memory_kb()
    result = {"seconds": seconds, "peak_mb": after["VmHWM"] / 1024}
    result["peak_above_mb"] = (after["VmHWM"] - before) / 1024
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure(job: dict) -> dict:
    """In a fresh process: the curve over all `n` samples (default allocator), 3 curves over the
    first `small` (time per sample within this process), then all `n` with the strict allocator."""
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    net = models.build("mlp", **job["model"])
    net.load_state_dict(load_file(job["weights"]))
    net.to(device).eval()
    x, y = torch.from_numpy(np.load(job["x"])), torch.from_numpy(np.load(job["y"]))
    options = {"norm": "linf", "steps": job["steps"], "batch_size": job["batch_size"], "seed": 0}
    found: dict = {}

    def curve(n: int) -> None:
        found["accuracy"] = robustness_curve(net, x[:n], y[:n], job["epsilons"], **options).accuracy

    curve(job["batch_size"])  # warm-up on one batch
    result = {"n": len(x), **_measured(lambda: curve(len(x)), device), **found}
    result["data_mb"] = (x.numel() * x.element_size() + y.numel() * y.element_size()) / 2**20
    small = [_measured(lambda: curve(job["small"]), device)["seconds"] for _ in range(3)]
    result["small_seconds"] = statistics.median(small)
    if _strict_allocator():
        result["strict"] = _measured(lambda: curve(len(x)), device)
    return result


def run_child(job: dict) -> dict:
    """`measure(job)` in a fresh Python process."""
    command = [sys.executable, "-m", "scripts.bench.scale", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"scale child for {job['x']} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_sizes(s: Settings, device: torch.device) -> dict[int, list[dict]]:
    """Every size in fresh processes, in alternating rounds (smallest first, then reversed)."""
    with tempfile.TemporaryDirectory() as tmp:
        log(f"scale: training an MLP on {s.train_samples} MNIST-shaped images")
        base = {"model": train_mlp(s, Path(tmp) / "mlp.safetensors", device), "small": s.sizes[0]}
        base |= {"weights": str(Path(tmp) / "mlp.safetensors"), "device": str(device)}
        base |= {"threads": torch.get_num_threads(), "epsilons": list(s.epsilons)}
        base |= {"steps": s.steps, "batch_size": s.batch_size}
        x, y = mnist_tensors(max(s.sizes), seed=2)  # made once: children only load arrays
        for n in s.sizes:
            np.save(Path(tmp) / f"x{n}.npy", x[:n].numpy())
            np.save(Path(tmp) / f"y{n}.npy", y[:n].numpy())
        found: dict[int, list[dict]] = {n: [] for n in s.sizes}
        for r in range(s.repeats):
            for n in s.sizes if r % 2 == 0 else reversed(s.sizes):
                log(f"scale: round {r + 1}/{s.repeats}, {n} samples (fresh process)")
                files = {k: str(Path(tmp) / f"{k}{n}.npy") for k in "xy"}
                found[n].append(run_child({**base, **files}))
    return found


def bench(s: Settings, device: torch.device) -> list[Section]:
    """Time and peak memory per size; one section."""
    found, first, last = run_sizes(s, device), s.sizes[0], s.sizes[-1]
    section = Section(f"robustness_curve over {', '.join(map(str, s.sizes))} MNIST-shaped samples")
    for n, runs in found.items():
        per_sample = [(r["seconds"] / n) / (r["small_seconds"] / first) for r in runs]
        section.rows.append(
            Row(f"time, {n} samples", [r["seconds"] for r in runs], ratios=per_sample,
                target=("<=", 1.10) if n != first else None,
                note=f"ratio: time per sample / at {first}, same process")
        )  # fmt: skip
    memory = [("peak_above_mb", "glibc default allocator", None)]
    if all("strict" in r for runs in found.values() for r in runs):
        memory.insert(0, ("strict", "strict allocator", ("<=", 1.10)))
    for key, allocator, target in memory:
        for n, runs in found.items():
            peak = [r["strict"]["peak_above_mb"] if key == "strict" else r[key] for r in runs]
            small = [
                r["strict"]["peak_above_mb"] if key == "strict" else r[key] for r in found[first]
            ]
            section.rows.append(
                Row(f"peak RSS above pre-call RSS, {allocator}, {n} samples", peak, "MB",
                    [a / b if b > 0 else math.nan for a, b in zip(peak, small, strict=True)],
                    target if n == last else None, f"ratio: / at {first}")
            )  # fmt: skip
    for n, runs in found.items():
        what = (
            f"absolute peak RSS, default allocator, {n} samples (data {runs[0]['data_mb']:.1f} MB)"
        )
        section.rows.append(Row(what, [r["peak_mb"] for r in runs], "MB"))
        if "cuda_peak_mb" in runs[0]:
            cuda = [r["cuda_peak_mb"] for r in runs]
            section.rows.append(Row(f"CUDA peak allocated, {n} samples", cuda, "MB"))
    accuracy = "; ".join(
        f"{n}: {[round(a, 3) for a in r[0]['accuracy']]}" for n, r in found.items()
    )
    section.extra.append(
        f"PGD-{s.steps}, L-inf, epsilons {list(s.epsilons)}, batches of {s.batch_size}; "
        f"time per sample compared with 3 curves over the first {first} samples in the same "
        f"process. Robust accuracy (round 1): {accuracy}."
    )
    return [section]


def suite(device: torch.device, quick: bool) -> list[Section]:
    return bench(Settings.quick() if quick else Settings(), device)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
