"""The preamble every attack shares: argument checks, working dtype, the way out.

`prepare` is called once at the top of each attack. It checks the arguments
(each check raises ``ValueError`` naming the argument, the rule and the value
received) and returns a `Problem`: the clean inputs in the dtype the attack
computes in, labels, per-sample budgets, and `Problem.finish`, which hands the
result back in the caller's dtype with the budget and the box still holding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks import losses, norms
from attacks.runtime import logits_of

# Inputs may sit this far outside `clip` (float rounding in the user's pipeline).
CLIP_TOLERANCE = 1e-6


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


def check_start(start: object, x: torch.Tensor) -> torch.Tensor:
    """Return a warm start as `x`'s dtype and device; raise unless it is a finite float
    tensor of `x`'s shape."""
    if (
        not isinstance(start, torch.Tensor)
        or not start.is_floating_point()
        or start.shape != x.shape
        or not bool(torch.isfinite(start).all())
    ):
        shown = (
            f"{start.dtype} tensor of shape {tuple(start.shape)}"
            if isinstance(start, torch.Tensor)
            else type(start).__name__
        )
        raise ValueError(
            f"start must be a finite float tensor of x's shape {tuple(x.shape)}, got {shown}"
        )
    return start.detach().to(device=x.device, dtype=x.dtype)


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


def check_eps(eps: object, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return the per-sample budgets `(N,)` in `dtype` (default `x`'s) on `x`'s device.

    `eps` is a number or a tensor of shape `()` or `(N,)`; every budget must be
    finite and >= 0.
    """
    dtype = x.dtype if dtype is None else dtype
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
        return values.to(dtype).expand(n).clone()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"eps must be a finite number >= 0 or a tensor, got {eps!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if eps > largest:
        raise ValueError(f"eps must be at most {largest:.3g} for {x.dtype} inputs, got {eps!r}")
    return torch.full((n,), float(eps), dtype=dtype, device=x.device)


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


# Attacks compute in at least this precision; float16 and bfloat16 steps would
# round away most of a small budget.
WORKING_DTYPE = torch.float32


@dataclass(frozen=True)
class Problem:
    """An attack's checked arguments.

    Attributes:
        x: Clean inputs, detached, in the working dtype (float32, or the
            input's if wider).
        y: True labels, int64.
        target: Target classes, int64, or None (untargeted).
        eps: Per-sample budgets `(N,)` in the working dtype.
        norm: `"linf"` or `"l2"`.
        loss: The objective's name (`attacks.losses`).
        clip: The valid box as floats, or None.
        original: The caller's `x`, detached, in its own dtype.
    """

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    eps: torch.Tensor
    norm: str
    loss: str
    clip: tuple[float, float] | None
    original: torch.Tensor

    def logits(self, model: nn.Module, point: torch.Tensor, check: bool = False) -> torch.Tensor:
        """The model's logits at `point`, in the working dtype.

        The model sees the caller's dtype (a float16 model gets float16
        inputs); the loss and the attack's arithmetic stay in the working one.
        `check` verifies the output's shape against the labels (first call).
        """
        logits = logits_of(model(point.to(self.original.dtype)))
        if check:
            check_logits(logits, self.y, self.target)
        return logits.to(self.x.dtype)

    def select(self, index: torch.Tensor | slice) -> Problem:
        """The problem restricted to the samples `index` (indices or a boolean mask)."""
        x = self.x[index]
        return Problem(
            x,
            self.y[index],
            None if self.target is None else self.target[index],
            self.eps[index],
            self.norm,
            self.loss,
            self.clip,
            x if self.original is self.x else self.original[index],
        )

    def finish(self, point: torch.Tensor) -> torch.Tensor:
        """`point` (inside the ball and the box) in the caller's dtype, detached.

        Casting to a narrower dtype rounds to the nearest value, which can
        move a coordinate away from `x` and out of the ball or the box; those
        coordinates are rounded toward `x` instead, so every coordinate of the
        result lies between `x` and `point`: no norm grows and the box holds.
        """
        out = point.detach().to(self.original.dtype)
        if out.dtype == point.dtype:
            return out
        away = (out.to(point.dtype) - self.x).abs() > (point.detach() - self.x).abs()
        if away.any():
            out = torch.where(away, torch.nextafter(out, self.original), out)
        return out


def prepare(
    x: object,
    y: object,
    eps: object,
    *,
    norm: object,
    target: object,
    loss: object,
    clip: object,
    loss_choices: Sequence[str] = losses.LOSSES,
) -> Problem:
    """Check an attack's common arguments and return them as a `Problem`.

    Raises:
        ValueError: Naming the first bad argument.
    """
    original = check_x(x).detach()
    labels = check_labels("y", y, original)
    targets = None if target is None else check_labels("target", target, original)
    working = original.dtype if original.dtype == torch.float64 else WORKING_DTYPE
    budgets = check_eps(eps, original, working)
    check_choice("norm", norm, norms.NORMS)
    check_choice("loss", loss, loss_choices)
    box = check_clip(clip, original)
    check_target(targets, labels)
    return Problem(
        x=original.to(working),
        y=labels,
        target=targets,
        eps=budgets,
        norm=str(norm),
        loss=str(loss),
        clip=box,
        original=original,
    )
