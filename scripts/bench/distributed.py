"""Distributed suite: a robustness curve on 2 processes x 1 thread against 1 process x 2 threads.

Each measurement runs in fresh processes (``python -m scripts.bench.distributed JOB``,
under ``torch.distributed.run --standalone`` for the 2-process side); the time is
taken inside, from a barrier before the curve to its end (start-up and the
process group's rendezvous excluded, every collective of the curve included).
The 2-process workers also time the collectives alone: the data agreement
check and one round's ``all_gather_object`` of per-sample results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import models
from advkit.distributed import per_sample_seeds

from .data import mnist_tensors
from .harness import Row, Section, log, ratios

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Settings:
    samples: int = 4000
    epsilons: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    steps: int = 10
    batch_size: int = 250
    repeats: int = 5

    @classmethod
    def quick(cls) -> Settings:
        return cls(samples=400, steps=5, batch_size=100, repeats=1)


def _prepare(s: Settings, folder: Path) -> dict:
    """Train the MLP briefly on MNIST-shaped images; save it and the attacked samples."""
    x, y = mnist_tensors(3000 + s.samples, seed=2)
    spec: dict[str, Any] = {"input_shape": [1, 28, 28], "num_classes": 10}
    torch.manual_seed(0)
    net = models.build("mlp", **spec).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        for idx in torch.randperm(3000).split(64):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "w.st"))
    save_file({"x": x[3000:].contiguous(), "y": y[3000:]}, str(folder / "data.st"))
    return {"spec": spec, "folder": str(folder), "epsilons": list(s.epsilons), "steps": s.steps,
            "batch_size": s.batch_size}  # fmt: skip


def measure(job: dict) -> dict:
    """In a fresh process (one rank of a group, or alone): time the curve, then the collectives."""
    import torch.distributed as dist

    from advkit.distributed import agree, distributed_curve, fingerprint, gather, init_from_env

    torch.set_num_threads(job["threads"])
    init_from_env(torch.device("cpu"), timeout=300)
    net = models.build("mlp", job["spec"]["input_shape"], job["spec"]["num_classes"])
    net.load_state_dict(load_file(f"{job['folder']}/w.st"))
    net.eval()
    data = load_file(f"{job['folder']}/data.st")
    x, y = data["x"], data["y"]
    options = {"norm": "linf", "steps": job["steps"], "batch_size": job["batch_size"]}
    grouped = dist.is_initialized()
    if grouped:
        dist.barrier()
    start = time.perf_counter()
    curve = distributed_curve(net, x, y, job["epsilons"], **options)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "n": curve.n_samples, "accuracy": curve.accuracy}
    if grouped:  # the collectives alone, on the payload of one round
        payload = {"index": list(range(len(y) // 2)), "fooled_at": [0.1] * (len(y) // 2),
                   "checks": curve.checks, "passes": curve.passes}  # fmt: skip
        key = fingerprint(x, y)
        timed = {}
        for name, call in (
            ("agree", lambda: agree("data", key)),
            ("gather", lambda: gather(payload)),
        ):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(20):
                call()
            timed[name] = (time.perf_counter() - t0) / 20
        result |= timed
        dist.destroy_process_group()
    return result


def _run(job: dict, processes: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    env["OMP_NUM_THREADS"] = str(job["threads"])
    module = ["-m", "scripts.bench.distributed", json.dumps({**job, "out": str(out)})]
    command = [sys.executable, *module]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(processes), *module]  # fmt: skip
    subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=900)
    return json.loads(out.read_text())


def suite(device: torch.device, quick: bool) -> list[Section]:
    """2 x 1 against 1 x 2 on the CPU (the device is ignored: gloo on CPU is what is measured)."""
    s = Settings.quick() if quick else Settings()
    with tempfile.TemporaryDirectory() as tmp:
        job = _prepare(s, Path(tmp))
        single: list[dict] = []
        double: list[dict] = []
        checks: list[bool] = []
        for r in range(s.repeats):
            for processes in (1, 2) if r % 2 == 0 else (2, 1):
                threads = 2 if processes == 1 else 1
                log(f"distributed: round {r + 1}, {processes} process(es) x {threads} thread(s)")
                res = _run({**job, "threads": threads}, processes, Path(tmp) / f"r{r}p{processes}")
                (single if processes == 1 else double).append(res)
            checks.append(single[-1]["accuracy"] == double[-1]["accuracy"])
    n = single[0]["n"]
    rate1 = [n / r["seconds"] for r in single]
    rate2 = [n / r["seconds"] for r in double]
    gather_s = [r["gather"] for r in double]
    per_eps = [g / len(s.epsilons) for g in gather_s]
    rows = [
        Row("1 process x 2 threads", rate1, "samples/s"),
        Row("2 processes x 1 thread (gloo)", rate2, "samples/s", ratios(rate2, rate1),
            (">=", 0.9), "ratio to 1 x 2"),
        Row("data agreement check (all_gather_object)", [r["agree"] for r in double], "s"),
        Row("one round's all_gather_object of per-sample results", gather_s, "s"),
        Row("collectives per eps (one gather per round, over the eps grid)", per_eps, "s",
            [p / r["seconds"] for p, r in zip(per_eps, double, strict=True)], None,
            "share of the curve's time"),
    ]  # fmt: skip
    note = (
        f"PGD-{s.steps} L-inf, {len(s.epsilons)} eps, {n} MNIST-shaped samples, an MLP trained "
        f"2 epochs, batch {s.batch_size}; accuracy identical in every round: {all(checks)}"
        + (
            ""
            if per_sample_seeds() or all(checks)
            else " (random starts still depend on batch composition: "
            "robustness_curve has no sample_index yet)"
        )
        + ". "
        "Times from a barrier before the curve to its end, in fresh processes, rounds "
        "alternating (1 2, 2 1, ...)."
    )
    return [Section("Distributed evaluation (CPU, gloo)", rows, [note])]


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    result = measure(job)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(job["out"]).write_text(json.dumps(result))
    sys.exit(0)
