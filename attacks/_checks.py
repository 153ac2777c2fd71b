"""Argument checks shared by the attacks, and the eval-mode context manager.

Every check raises ``ValueError`` naming the argument, the rule and the value
received, so a user sees at once which argument to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# Inputs may sit this far outside `clip` (float rounding in the user's pipeline).
CLIP_TOLERANCE = 1e-6


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (frozen BN statistics); restore each module's flag after.

    A model already in eval mode is left alone: setting every module's flag
    takes tens of microseconds, a noticeable share of a small model's step.
    """
    saved = [(m, m.training) for m in model.modules()]
    if any(flag for _, flag in saved):
        model.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            if m.training != flag:
                m.training = flag


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run as an attack should: `eval_mode`, and the parameters frozen.

    An attack needs gradients with respect to the input only; with
    `requires_grad` off, the forward pass keeps nothing for the weights'
    gradients. Each parameter's flag (and its `.grad`) is as it was after.
    """
    thawed = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model):
        for p in thawed:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in thawed:
                p.requires_grad_(True)


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise unless `value` is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_count(name: str, value: object) -> int:
    """Return `value` if it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_x(x: object) -> torch.Tensor:
    """Return `x` if it is a floating-point batch `(N, ...)`."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        shown = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else x
        raise ValueError(f"x must be a floating-point tensor of shape (N, ...), got {shown!r}")
    return x


def check_clip(clip: object, x: torch.Tensor) -> tuple[float, float] | None:
    """Return `clip` as floats; raise if it is malformed or `x` lies outside it."""
    if clip is None:
        if x.numel():
            x_min, x_max = (v.item() for v in torch.aminmax(x))  # NaN and inf show up here
            if not (math.isfinite(x_min) and math.isfinite(x_max)):
                raise ValueError(f"x must hold finite values, got values in [{x_min}, {x_max}]")
        return None
    if (
        not isinstance(clip, (tuple, list))
        or len(clip) != 2
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in clip)
        or not clip[0] < clip[1]
    ):
        raise ValueError(
            f"clip must be None or a pair (low, high) of finite low < high, got {clip!r}"
        )
    low, high = float(clip[0]), float(clip[1])
    if x.numel():
        x_min, x_max = (v.item() for v in torch.aminmax(x))  # one pass over x
        # Written so that NaN inputs fail the test too.
        if not (x_min >= low - CLIP_TOLERANCE and x_max <= high + CLIP_TOLERANCE):
            raise ValueError(
                f"x must lie inside clip={clip!r} (up to {CLIP_TOLERANCE}), "
                f"got values in [{x_min}, {x_max}]"
            )
    return low, high


def check_eps(eps: object, x: torch.Tensor) -> torch.Tensor:
    """Return the per-sample budgets `(N,)` in `x`'s dtype and device.

    `eps` is a number or a tensor of shape `()` or `(N,)`; every budget must be
    finite and >= 0.
    """
    n = x.shape[0]
    # Larger budgets overflow the squared L2 norms and step sizes in x's dtype;
    # any budget past the input's range acts the same anyway.
    largest = math.sqrt(torch.finfo(x.dtype).max) / 8
    if isinstance(eps, torch.Tensor):
        if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != n) or eps.is_complex():
            raise ValueError(
                f"eps must be a number or a tensor of shape () or ({n},), "
                f"got shape {tuple(eps.shape)}"
            )
        values = eps.detach().to(device=x.device, dtype=torch.float64)
        bad = ~torch.isfinite(values) | (values < 0)
        if bad.any():
            first = values[bad].flatten()[0].item()
            raise ValueError(f"eps must be finite and >= 0 for every sample, got {first!r}")
        if values.numel() and values.max().item() > largest:
            raise ValueError(
                f"eps must be at most {largest:.3g} for {x.dtype} inputs, got {values.max().item()!r}"
            )
        return values.to(x.dtype).expand(n).clone()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"eps must be a finite number >= 0 or a tensor, got {eps!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if eps > largest:
        raise ValueError(f"eps must be at most {largest:.3g} for {x.dtype} inputs, got {eps!r}")
    return torch.full((n,), float(eps), dtype=x.dtype, device=x.device)


def check_step_size(step_size: object) -> float:
    """Return `step_size` if it is a finite number > 0."""
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, (int, float))
        or not (math.isfinite(step_size) and step_size > 0)
    ):
        raise ValueError(f"step_size must be None or a finite number > 0, got {step_size!r}")
    return float(step_size)


def check_labels(name: str, labels: object, x: torch.Tensor) -> torch.Tensor:
    """Return `labels` as int64 on `x`'s device if they are `(N,)` integers >= 0."""
    n = x.shape[0]
    if (
        not isinstance(labels, torch.Tensor)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
        or tuple(labels.shape) != (n,)
    ):
        shown = (
            f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else repr(labels)
        )
        raise ValueError(f"{name} must be an integer tensor of shape ({n},), got {shown}")
    if n and labels.min().item() < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got {labels.min().item()}")
    return labels.to(device=x.device, dtype=torch.int64)


def check_target(target: torch.Tensor | None, y: torch.Tensor) -> None:
    """Raise if a targeted attack asks for the true class of some sample."""
    if target is not None and (target == y).any():
        i = int((target == y).nonzero()[0, 0])
        raise ValueError(
            f"target must differ from y for every sample, got target[{i}] == y[{i}] == {int(y[i])}"
        )


def check_logits(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
    """Raise if the model's output is not `(N, K)` or a label is not below K."""
    n = y.shape[0]
    if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(
            f"model must map x to logits of shape (N, K) with K >= 2, N={n}, "
            f"got shape {tuple(logits.shape)}"
        )
    k = logits.shape[1]
    for name, labels in (("y", y), ("target", target)):
        if labels is not None and n and labels.max().item() >= k:
            raise ValueError(
                f"{name} must hold class indices < K={k} (the model's outputs), "
                f"got {labels.max().item()}"
            )
