"""Parts shared by the three models: input normalization and argument checks.

`Normalize` is the first layer of every model, so the models take pixels in
[0, 1] and every attack budget is in pixel units (DESIGN.md, as in RobustBench).
The ``check_*`` helpers validate constructor arguments at the public boundary
and raise `ValueError` naming the argument, the rule and the value received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "count_parameters"]


def check_input_shape(input_shape: object) -> tuple[int, int, int]:
    """Return ``input_shape`` as a ``(C, H, W)`` tuple of positive ints, or raise."""
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or not all(_is_int(n, 1) for n in input_shape)
    ):
        raise ValueError(f"input_shape must be (C, H, W), three positive ints, got {input_shape!r}")
    channels, height, width = (int(n) for n in input_shape)
    return channels, height, width


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_int_list(name: str, value: object, minimum: int = 1) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ints >= ``minimum`` (JSON lists welcome), or raise."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not all(_is_int(n, minimum) for n in value)
    ):
        raise ValueError(f"{name} must be a list of ints >= {minimum}, got {value!r}")
    return tuple(int(n) for n in value)


def check_dropout(name: str, value: object) -> float:
    """Return ``value`` as a float probability in [0, 1), or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a finite float > 0, or raise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_per_channel(name: str, value: object, channels: int) -> tuple[float, ...] | None:
    """Return ``value`` as ``channels`` finite floats, None unchanged, or raise."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != channels
        or not all(_is_finite(v) for v in value)
    ):
        raise ValueError(
            f"{name} must be None or a list of {channels} finite numbers (one per channel), "
            f"got {value!r}"
        )
    return tuple(float(v) for v in value)


def _is_int(value: object, minimum: int) -> bool:
    # bool is an int subclass; hidden=[True] is a mistake, not a width of 1.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module`` (buffers such as mean/std excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, with mean and std saved as buffers.

    The buffers are persistent, so they travel with the weights in the
    state_dict (and the run's safetensors file): a reloaded model normalizes
    exactly as the trained one did.

    Args:
        channels: number of input channels C.
        mean: per-channel mean, C numbers; None means 0 (identity).
        std: per-channel standard deviation, C numbers > 0; None means 1.

    Raises:
        ValueError: if mean or std has the wrong length, a non-finite value,
            or std has a value <= 0.

    Shape:
        (N, C, H, W) -> (N, C, H, W)
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        mean_values = check_per_channel("mean", mean, channels) or (0.0,) * channels
        std_values = check_per_channel("std", std, channels) or (1.0,) * channels
        if not all(s > 0 for s in std_values):
            raise ValueError(f"std must be > 0 for every channel, got {std!r}")
        self.register_buffer("mean", torch.tensor(mean_values).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std_values).view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
