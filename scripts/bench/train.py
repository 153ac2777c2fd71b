"""Train suite: `advkit.train.train` against a plain PyTorch loop and torchvision's MNIST pipeline.

Training samples per second on MNIST-shaped IDX files; what each row means is
written in BENCHMARKS.md, section Training.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

import models
from advkit.data import SPLITS, Dataset, load_dataset
from advkit.train import DEFAULT_LR, TrainConfig, make_optimizer, train

from .data import write_idx_mnist
from .harness import Row, Section, interleaved, log, ratios, synchronizer


@dataclass
class Settings:
    """Sizes of the train suite: advkit holds out 1/12 of `n_train` for validation (as for
    MNIST), torchvision trains on all; `large_batch` (None: skip) compares advkit and
    torchvision at a second batch size."""

    model: str = "mlp"
    n_train: int = 12000
    n_test: int = 1000
    epochs: int = 2
    batch_size: int = 64
    large_batch: int | None = 256
    repeats: int = 3

    @classmethod
    def quick(cls) -> Settings:
        return cls(n_train=3000, n_test=500, epochs=1)


def head(data: Dataset, n: int) -> Dataset:
    """The first `n` samples of every split (a cheap warm-up run)."""
    splits = {f"{k}_{p}": getattr(data, f"{k}_{p}")[:n] for k in "xy" for p in SPLITS}
    return dataclasses.replace(data, **splits)


def time_loops(s: Settings, device: torch.device, root: Path) -> dict:
    """Every loop once per round, in alternating rounds, on the IDX files under `root`."""
    data = load_dataset("mnist", data_dir=root, download=False)
    peer_data = datasets.MNIST(str(root), train=True, transform=ToTensor(), download=False)
    mean, std = data.channel_stats()
    config = TrainConfig(
        model=s.model, dataset="mnist", data_dir=str(root), optimizer="adam",
        epochs=s.epochs, batch_size=s.batch_size,
    )  # fmt: skip
    runs = itertools.count()

    def fresh(advkit_optimizer: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        net = models.build(s.model, data.input_shape, data.num_classes, mean=mean, std=std)
        net = net.to(device).train()
        if advkit_optimizer:
            return net, make_optimizer(config.resolved(), net.parameters())
        return net, torch.optim.Adam(net.parameters(), lr=DEFAULT_LR["adam"])

    def advkit(epochs: int, subset: int | None = None, batch: int = s.batch_size) -> None:
        options = {**config.__dict__, "epochs": epochs, "batch_size": batch}
        dataset = data if subset is None else head(data, subset)
        train(
            TrainConfig(**options), Path(root) / f"run-{next(runs)}", dataset=dataset, device=device
        )

    def steps(net, optimizer, batches) -> None:
        for xb, yb in batches:
            loss = F.cross_entropy(net(xb.to(device)), yb.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def plain(epochs: int, subset: int | None = None, advkit_optimizer: bool = True) -> None:
        net, optimizer = fresh(advkit_optimizer)
        shuffle = torch.Generator().manual_seed(0)
        x, y = data.x_train[:subset].to(device), data.y_train[:subset].to(device)
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=shuffle).split(s.batch_size)
            steps(net, optimizer, ((x[i.to(device)], y[i.to(device)]) for i in order))

    def torchvision(epochs: int, subset=None, advkit_optimizer=False, batch=s.batch_size) -> None:
        net, optimizer = fresh(advkit_optimizer)
        source = peer_data if subset is None else Subset(peer_data, range(subset))
        loader = DataLoader(source, batch_size=batch, shuffle=True)
        for _ in range(epochs):
            steps(net, optimizer, loader)

    loops: dict[str, Callable[..., None]] = {
        "advkit": advkit,
        "plain": plain,
        "plain-default": partial(plain, advkit_optimizer=False),
        "torchvision": torchvision,
        "torchvision-fused": partial(torchvision, advkit_optimizer=True),
    }
    if s.large_batch is not None:
        loops["advkit-large"] = partial(advkit, batch=s.large_batch)
        loops["torchvision-large"] = partial(torchvision, batch=s.large_batch)
    n, n_peer, few = len(data.y_train), len(peer_data), min(512, len(data.y_train))
    log(f"training {s.model} on {n} (advkit) / {n_peer} (torchvision) images, {s.epochs} epochs")
    t = interleaved(
        {name: partial(loop, s.epochs) for name, loop in loops.items()},
        repeats=s.repeats,
        warmup={name: partial(loop, 1, few) for name, loop in loops.items()},
        sync=synchronizer(device),
    )
    fused = make_optimizer(config.resolved(), fresh(True)[0].parameters()).defaults["fused"]
    return {"times": t, "n": n, "n_peer": n_peer, "n_val": len(data.y_val), "fused": fused}


def bench(s: Settings, device: torch.device) -> list[Section]:
    """Time the loops; one section of samples per second and ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_idx_mnist(Path(tmp) / "data", s.n_train, s.n_test)
        found = time_loops(s, device, root)
    t, n, n_peer = found["times"], found["n"], found["n_peer"]

    def rate(name: str) -> list[float]:
        return [s.epochs * (n_peer if name.startswith("torchvision") else n) / v for v in t[name]]

    adam = "Adam(fused=True)" if found["fused"] else "Adam (no fused kernel here)"
    advkit = f"advkit.train.train, {n} images + validation + checkpoint each epoch"
    peer = "torchvision MNIST(transform=ToTensor()) + DataLoader(shuffle=True)"
    peer_rate = "ratio: / torchvision MNIST + DataLoader, per training sample"
    b, big, plain = s.batch_size, s.large_batch, f"plain PyTorch loop, {n} images"
    # what, the loop whose rate it shows, the rates whose per-round ratio it gives, target, note
    spec = [
        (advkit, "advkit", ("advkit", "plain"), (">=", 0.95),
         f"batch {b}; ratio: / plain loop with the same optimizer"),
        (advkit, "advkit", ("advkit", "torchvision"), (">=", 3.0), f"batch {b}; {peer_rate}"),
        (f"{plain}, advkit's optimizer ({adam})", "plain", ("plain", "torchvision"), None,
         "ratio: / torchvision; the most any loop over this model gets"),
        (f"{plain}, torch.optim.Adam defaults", "plain-default", ("plain-default", "torchvision"),
         None, "ratio: / torchvision"),
        (f"{peer} with advkit's optimizer ({adam}), {n_peer} images", "torchvision-fused",
         ("advkit", "torchvision-fused"), None,
         "ratio: advkit / this; the data pipeline's share alone"),
        (f"{peer}, torch.optim.Adam defaults, {n_peer} images", "torchvision", None, None,
         f"batch {b}"),
        (advkit, "advkit-large", ("advkit-large", "torchvision-large"), None,
         f"batch {big}; {peer_rate}"),
        (f"{peer}, torch.optim.Adam defaults, {n_peer} images", "torchvision-large", None, None,
         f"batch {big}"),
    ]  # fmt: skip
    section = Section(f"Samples per second ({s.model} (1, 28, 28), Adam, {s.epochs} epochs)")
    for what, loop, pair, target, note in spec:
        if loop in t:
            per_round = ratios(rate(pair[0]), rate(pair[1])) if pair else None
            section.rows.append(Row(what, rate(loop), "samples/s", per_round, target, note))
    epoch = Row("advkit.train.train epoch", [v / s.epochs for v in t["advkit"]], "s")
    epoch.ratios, epoch.note = ratios(t["torchvision"], t["advkit"]), f"batch {b}; ratio: "
    epoch.note += "torchvision epoch / advkit epoch"
    section.rows.insert(2, epoch)
    section.extra.append(
        f"{s.n_train} MNIST-shaped training images (advkit holds out {found['n_val']} for "
        f"validation, torchvision trains on all {n_peer}); advkit's optimizer: {adam}."
    )
    return [section]


def suite(device: torch.device, quick: bool) -> list[Section]:
    return bench(Settings.quick() if quick else Settings(), device)
