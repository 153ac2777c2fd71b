"""Fast Gradient Sign Method: one gradient step of length eps."""

from __future__ import annotations

import torch
from torch import nn

from attacks import _checks, losses, norms


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    target: torch.Tensor | None = None,
    loss: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Fast Gradient (Sign) Method, Goodfellow et al. 2015 (https://arxiv.org/abs/1412.6572).

    One step of length eps along the loss gradient: `eps * sign(g)` for
    L-inf, `eps * g / ||g||_2` for L2, then clipped into `clip`. The model runs
    in eval mode and is left exactly as it was found.

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor, finite and >= 0.
        norm: `"linf"` or `"l2"`; every norm is taken per sample over `x.flatten(1)`.
        target: None for an untargeted attack, else the class each sample should become.
        loss: `"ce"`, `"lecture"` or `"margin"` (see `attacks.losses.objective`).
        clip: Valid input range `(low, high)`, or None for no clipping.

    Returns:
        The adversarial inputs, detached, with `x`'s shape, dtype and device.

    Raises:
        ValueError: For a bad argument; the message names it.

    Shape:
        x `(N, ...)`, y `(N,)`, target `(N,)` -> `(N, ...)`.
    """
    x = _checks.check_x(x).detach()
    y = _checks.check_labels("y", y, x)
    if target is not None:
        target = _checks.check_labels("target", target, x)
    eps = _checks.check_eps(eps, x)
    _checks.check_choice("norm", norm, norms.NORMS)
    _checks.check_choice("loss", loss, losses.LOSSES)
    clip = _checks.check_clip(clip, x)
    _checks.check_target(target, y)
    if not eps.any():
        return x.clone()

    with _checks.attack_mode(model), torch.enable_grad():
        point = x.detach().requires_grad_(True)  # a new leaf; the caller's `x` is not touched
        logits = model(point)
        _checks.check_logits(logits, y, target)
        (grad,) = torch.autograd.grad(losses.total(logits, y, target, loss), point)
    return norms.step(x, x, grad, eps, eps, norm, clip).detach().to(x.dtype)
