"""The GPU path: mixed precision, channels-last memory, torch.compile, in one call.

``accelerate(model, device=..., amp="bf16", channels_last=True, compile=True)``
returns a module to hand to the attacks (and to `robustness_curve`): its
forward pass runs under ``torch.autocast`` and hands back float32 logits, so
every loss and every step of the attack's arithmetic stays in float32 on the
float32 input, and the budget and the box hold exactly as without AMP (the
projection never sees a half-precision number). For training, `autocast`
wraps the forward pass and `grad_scaler` scales float16 losses::

    with accel.autocast(device, amp):
        loss = F.cross_entropy(model(x).float(), y)
    scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

import attacks

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str | None) -> torch.dtype | None:
    """The autocast dtype of ``"bf16"`` / ``"fp16"``; None for None or ``"none"``."""
    if amp in (None, "none"):
        return None
    if amp not in AMP:
        raise ValueError(f"amp must be one of none, {', '.join(AMP)}, got {amp!r}")
    return AMP[amp]


def autocast(device: torch.device | str, amp: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on `device` with the `amp` dtype, or a no-op context without AMP."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, amp: str | None) -> Any:
    """A GradScaler, enabled only for float16 on CUDA (bfloat16 has float32's range)."""
    enabled = amp_dtype(amp) == torch.float16 and torch.device(device).type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


class Autocast(nn.Module):
    """`model` with its forward pass under autocast, returning float32 logits.

    Inputs keep their dtype (float32) outside the model; 4-D inputs are handed
    over in channels-last memory when `channels_last`.
    """

    def __init__(
        self,
        model: nn.Module,
        device_type: str,
        dtype: torch.dtype | None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(x)
        return attacks.logits_of(out).float()


def accelerate(
    model: nn.Module,
    *,
    device: torch.device | str,
    amp: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> nn.Module:
    """`model` ready for fast evaluation on `device` (returned unchanged with no option set).

    Args:
        amp: ``"bf16"`` or ``"fp16"``: forward passes under autocast, float32 logits out.
        channels_last: Convolution weights and 4-D inputs in NHWC memory (tensor cores);
            converts `model`'s parameters in place.
        compile: ``torch.compile`` the model (worth it for long evaluations on GPUs).
    """
    dtype = amp_dtype(amp)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if dtype is None and not channels_last:
        return model
    return Autocast(model, torch.device(device).type, dtype, channels_last)


def describe(*, amp: str | None = None, channels_last: bool = False, compile: bool = False) -> str:
    """The options as a short note (``"amp bf16, channels_last"``), empty when none is set."""
    parts = [f"amp {amp}"] if amp_dtype(amp) is not None else []
    parts += ["channels_last"] if channels_last else []
    parts += ["compile"] if compile else []
    return ", ".join(parts)
