"""GPU suite: PGD time per step against the forward+backward floor, training with and without AMP.

    python -m scripts.bench --only gpu --device cuda

On a machine without CUDA it says so and measures nothing. The model is the
course's BN-CNN on CIFAR-shaped inputs (3x32x32, random pixels: speed does not
depend on the values), batch 512.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

import attacks
import models
from advkit.accel import accelerate, autocast, grad_scaler

from .harness import Row, Section, interleaved, log, ratios, synchronizer

BATCH = 512
STEPS = 10


def _floor(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    """One forward and one backward pass to the input: what a PGD step cannot go below."""

    def step() -> object:
        point = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(attacks.logits_of(model(point)).float(), y)
        return torch.autograd.grad(loss, point)

    return step


def _pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    g = torch.Generator(device=x.device).manual_seed(0)
    return lambda: attacks.pgd(model, x, y, 8 / 255, norm="linf", steps=STEPS, generator=g)


def _train(model, x, y, device, amp) -> Callable[[], object]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = grad_scaler(device, amp)

    def step() -> object:
        with autocast(device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return step


def suite(device: torch.device, quick: bool) -> list[Section]:
    if device.type != "cuda":
        log("gpu: no CUDA device, nothing measured")
        return [Section("GPU path", [], ["no CUDA device: not run (`--device cuda` on a GPU)."])]
    sync = synchronizer(device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = models.build("bncnn", input_shape=(3, 32, 32), num_classes=10).to(device).eval()
    x = torch.rand(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    variants = {
        "fp32": base,
        "bf16": accelerate(base, device=device, amp="bf16"),
        "bf16 + channels_last": accelerate(
            copy.deepcopy(base), device=device, amp="bf16", channels_last=True
        ),  # a copy: channels_last converts the module in place
    }
    fns: dict[str, Callable[[], object]] = {}
    for name, model in variants.items():
        fns[f"floor {name}"] = _floor(model, x, y)
        fns[f"pgd {name}"] = _pgd(model, x, y)
    repeats = 3 if quick else 7
    times = interleaved(fns, repeats=repeats, sync=sync)
    rows = []
    for name in variants:
        per_step = [t / STEPS for t in times[f"pgd {name}"]]
        rows.append(
            Row(f"fwd+bwd floor, {name}", times[f"floor {name}"], "s", note=f"batch {BATCH}")
        )
        rows.append(Row(f"PGD-{STEPS} per step, {name}", per_step, "s",
                        ratios(per_step, times[f"floor {name}"]), ("<=", 1.3), "ratio to the floor"))  # fmt: skip
    rows += _training_rows(device, x, y, repeats, sync)
    return [Section("GPU path (BN-CNN, CIFAR-shaped, batch 512)", rows)]


def _training_rows(device, x, y, repeats, sync) -> list[Row]:
    steps: dict[str, Callable[[], object]] = {}
    for name, amp, channels_last in (("fp32", None, False), ("bf16", "bf16", False),
                                     ("bf16 + channels_last", "bf16", True)):  # fmt: skip
        torch.manual_seed(0)
        model = models.build("bncnn", input_shape=(3, 32, 32), num_classes=10).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        xb = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        steps[name] = _train(model, xb, y, device, amp)
    times = interleaved(steps, repeats=repeats * 3, max_repeats=repeats * 6, sync=sync)
    fp32 = [BATCH / t for t in times["fp32"]]
    rows = [Row("training fp32", fp32, "samples/s")]
    for name in ("bf16", "bf16 + channels_last"):
        rate = [BATCH / t for t in times[name]]
        rows.append(Row(f"training {name}", rate, "samples/s", ratios(rate, fp32), None, "vs fp32"))
    log("gpu: done")
    return rows
