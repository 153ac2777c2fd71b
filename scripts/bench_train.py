"""Training benchmark (issue 5): advkit's training loop against a plain loop and torchvision's pipeline.

On MNIST-shaped data (28x28 uint8 IDX files written to a temporary folder,
since nothing can be downloaded), training samples per second of:

- `advkit.train.train` as a user gets it: data loaded by `advkit.data.load_dataset`
  from those files, validation evaluated and a checkpoint written every epoch;
- a plain hand-written PyTorch loop on the same tensors (same model, batch
  size, optimizer, shuffling by index on whole tensors): target >= 0.95x;
  and the same loop with `torch.optim.Adam`'s defaults;
- the usual `torchvision.datasets.MNIST(root, transform=ToTensor())` +
  `DataLoader(batch_size, shuffle=True)` pipeline on the same files, with
  `torch.optim.Adam`'s defaults: target >= 3x (batch 64); and with advkit's
  optimizer, and at a larger batch, for information.

Run through `scripts/bench.py`; `python scripts/bench_train.py [--quick]` runs this section alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import dataclasses
import functools
import itertools
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from bench_common import (
    Row,
    Section,
    interleaved,
    log,
    machine_line,
    per_round,
    set_threads,
    write_idx_mnist,
)
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

import models
from advkit.data import SPLITS, Dataset, load_dataset
from advkit.devices import DEVICES, resolve_device
from advkit.train import DEFAULT_LR, TrainConfig, make_optimizer, train


@dataclass
class TrainSettings:
    """Sizes of the training benchmark.

    Attributes:
        model: Course model trained on `(1, 28, 28)` inputs.
        n_train: Images in the IDX training file; advkit holds out 1/12 of
            them for validation (as it does for MNIST), torchvision trains on all.
        n_test: Images in the IDX test file.
        epochs: Epochs per timed run.
        batch_size: Samples per optimizer step, for every loop (the target's batch).
        large_batch: A second batch size, advkit against torchvision only (None: skip).
        repeats: Rounds (each runs every loop once).
    """

    model: str = "mlp"
    n_train: int = 12000
    n_test: int = 1000
    epochs: int = 2
    batch_size: int = 64
    large_batch: int | None = 256
    repeats: int = 3

    @classmethod
    def quick(cls) -> TrainSettings:
        return cls(n_train=3000, n_test=500, epochs=1)


def head(data: Dataset, n: int) -> Dataset:
    """The first `n` samples of every split (a cheap warm-up run)."""
    splits = {f"{k}_{p}": getattr(data, f"{k}_{p}")[:n] for k in "xy" for p in SPLITS}
    return dataclasses.replace(data, **splits)


def bench_training(s: TrainSettings, device: torch.device) -> Section:
    """Time the training loops in alternating rounds; one section.

    Loops: advkit's `train`; a plain loop with the optimizer advkit builds
    (`make_optimizer`: Adam with torch's fused kernel where it has one) and
    one with `torch.optim.Adam`'s defaults; torchvision's MNIST + DataLoader
    with `Adam`'s defaults (what its users write) and with the fused Adam;
    advkit and torchvision again at `large_batch`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_idx_mnist(root, s.n_train, s.n_test)
        data = load_dataset("mnist", data_dir=root, download=False)
        peer_data = datasets.MNIST(str(root), train=True, transform=ToTensor(), download=False)
        mean, std = data.channel_stats()
        config = TrainConfig(
            model=s.model,
            dataset="mnist",
            data_dir=str(root),
            optimizer="adam",
            epochs=s.epochs,
            batch_size=s.batch_size,
        )
        runs = itertools.count()
        n_advkit, n_peer = len(data.y_train), len(peer_data)
        log(
            f"training {s.model} on {n_advkit} (advkit; {len(data.y_val)} held out for "
            f"validation) / {n_peer} (torchvision) MNIST-shaped images, {s.epochs} epochs"
        )

        def fresh_model() -> torch.nn.Module:
            torch.manual_seed(0)
            net = models.build(s.model, data.input_shape, data.num_classes, mean=mean, std=std)
            return net.to(device).train()

        def optimizer_for(net: torch.nn.Module, advkit_optimizer: bool) -> torch.optim.Optimizer:
            if advkit_optimizer:
                return make_optimizer(config.resolved(), net.parameters())
            return torch.optim.Adam(net.parameters(), lr=DEFAULT_LR["adam"])

        def advkit_loop(
            epochs: int = s.epochs, subset: int | None = None, batch: int = s.batch_size
        ) -> None:
            dataset = data if subset is None else head(data, subset)
            out = Path(tmp) / f"run-{next(runs)}"
            settings = {**config.__dict__, "epochs": epochs, "batch_size": batch}
            train(TrainConfig(**settings), out, dataset=dataset, device=device)

        def plain_loop(
            epochs: int = s.epochs, subset: int | None = None, advkit_optimizer: bool = True
        ) -> None:
            net = fresh_model()
            optimizer = optimizer_for(net, advkit_optimizer)
            shuffle = torch.Generator().manual_seed(0)
            x, y = data.x_train[:subset].to(device), data.y_train[:subset].to(device)
            for _ in range(epochs):
                for idx in torch.randperm(len(y), generator=shuffle).split(s.batch_size):
                    idx = idx.to(device)
                    loss = F.cross_entropy(net(x[idx]), y[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

        def torchvision_loop(
            epochs: int = s.epochs,
            subset: int | None = None,
            advkit_optimizer: bool = False,
            batch: int = s.batch_size,
        ) -> None:
            net = fresh_model()
            optimizer = optimizer_for(net, advkit_optimizer)
            source = peer_data if subset is None else Subset(peer_data, range(subset))
            loader = DataLoader(source, batch_size=batch, shuffle=True)
            for _ in range(epochs):
                for xb, yb in loader:
                    xb, yb = xb.to(device), yb.to(device)
                    loss = F.cross_entropy(net(xb), yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

        loops: dict[str, Callable[..., None]] = {
            "advkit": advkit_loop,
            "plain": plain_loop,
            "plain-default": functools.partial(plain_loop, advkit_optimizer=False),
            "torchvision": torchvision_loop,
            "torchvision-fused": functools.partial(torchvision_loop, advkit_optimizer=True),
        }
        if s.large_batch is not None:
            loops["advkit-large"] = functools.partial(advkit_loop, batch=s.large_batch)
            loops["torchvision-large"] = functools.partial(torchvision_loop, batch=s.large_batch)
        few = min(512, n_advkit)  # warm-up: one short epoch of each loop
        t = interleaved(
            {name: functools.partial(loop, s.epochs) for name, loop in loops.items()},
            device,
            repeats=s.repeats,
            warmup={name: functools.partial(loop, 1, few) for name, loop in loops.items()},
        )
        fused = make_optimizer(config.resolved(), fresh_model().parameters()).defaults["fused"]

    def rate(name: str) -> list[float]:
        n = n_peer if name.startswith("torchvision") else n_advkit
        return [s.epochs * n / v for v in t[name]]

    adam = "Adam(fused=True)" if fused else "Adam (no fused kernel here)"
    what = f"{s.model} (1, 28, 28), Adam, {s.epochs} epochs"
    advkit = f"advkit.train.train, {n_advkit} images + validation + checkpoint each epoch"
    peer = "torchvision MNIST(transform=ToTensor()) + DataLoader(shuffle=True)"
    section = Section(f"Training: samples per second ({what})")
    section.rows = [
        Row(
            advkit,
            rate("advkit"),
            unit="samples/s",
            ratios=per_round(rate("advkit"), rate("plain")),
            target=(">=", 0.95),
            note=f"batch {s.batch_size}; ratio: / plain loop with the same optimizer",
        ),
        Row(
            advkit,
            rate("advkit"),
            unit="samples/s",
            ratios=per_round(rate("advkit"), rate("torchvision")),
            target=(">=", 3.0),
            note=f"batch {s.batch_size}; ratio: / torchvision MNIST + DataLoader, "
            "per training sample",
        ),
        Row(
            "advkit.train.train epoch",
            [v / s.epochs for v in t["advkit"]],
            ratios=per_round(t["torchvision"], t["advkit"]),
            note=f"batch {s.batch_size}; ratio: torchvision epoch / advkit epoch",
        ),
        Row(
            f"plain PyTorch loop, {n_advkit} images, advkit's optimizer ({adam})",
            rate("plain"),
            unit="samples/s",
            ratios=per_round(rate("plain"), rate("torchvision")),
            note="ratio: / torchvision; the most any loop over this model gets",
        ),
        Row(
            f"plain PyTorch loop, {n_advkit} images, torch.optim.Adam defaults",
            rate("plain-default"),
            unit="samples/s",
            ratios=per_round(rate("plain-default"), rate("torchvision")),
            note="ratio: / torchvision",
        ),
        Row(
            f"{peer} with advkit's optimizer ({adam}), {n_peer} images",
            rate("torchvision-fused"),
            unit="samples/s",
            ratios=per_round(rate("advkit"), rate("torchvision-fused")),
            note="ratio: advkit / this; the data pipeline's share alone",
        ),
        Row(
            f"{peer}, torch.optim.Adam defaults, {n_peer} images",
            rate("torchvision"),
            unit="samples/s",
            note=f"batch {s.batch_size}",
        ),
    ]
    if s.large_batch is not None:
        section.rows += [
            Row(
                advkit,
                rate("advkit-large"),
                unit="samples/s",
                ratios=per_round(rate("advkit-large"), rate("torchvision-large")),
                note=f"batch {s.large_batch}; ratio: / torchvision MNIST + DataLoader, "
                "per training sample",
            ),
            Row(
                f"{peer}, torch.optim.Adam defaults, {n_peer} images",
                rate("torchvision-large"),
                unit="samples/s",
                note=f"batch {s.large_batch}",
            ),
        ]
    section.after.append(
        f"Same IDX files for every loop ({s.n_train} training images, MNIST-shaped: "
        "scikit-learn digits scaled into 28x28 with shifts and noise), same model, "
        "same batch size. advkit's time is the whole `train()` call: building the "
        "model, every epoch's validation pass and checkpoint, and the final test "
        "evaluation; the other loops time only their epochs. Throughput counts "
        f"training images (advkit holds out {len(data.y_val)} for validation, "
        f"torchvision trains on all {n_peer}); the epoch ratio compares one epoch of "
        "each as a user runs it. DataLoader with its default num_workers=0. advkit "
        f"builds its optimizer with `make_optimizer`: {adam} here. The torchvision "
        "loop of the target uses `torch.optim.Adam`'s defaults, as its users write it; "
        "the row with advkit's optimizer shows how much of the ratio is the data "
        "pipeline alone. The plain loop on whole tensors is the ceiling of any loop "
        "over this model: what is left is the model's forward, backward and "
        "optimizer step, so the ratio to torchvision is bounded by it."
    )
    return section


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Fewer images, one epoch.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--threads", type=click.IntRange(min=1), help="torch threads [default: torch's].")
def main(quick: bool, device: str, threads: int | None) -> None:
    """Time advkit's training loop against a plain loop and torchvision's MNIST pipeline."""
    set_threads(threads)
    dev = resolve_device(device)
    log(machine_line(dev))
    section = bench_training(TrainSettings.quick() if quick else TrainSettings(), dev)
    click.echo(section.markdown())


if __name__ == "__main__":
    sys.exit(main())
