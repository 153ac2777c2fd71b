"""Fast Gradient Sign Method: one gradient step of length eps."""

from __future__ import annotations

import torch
from torch import nn

from attacks import checks, losses, norms
from attacks.runtime import attack_mode


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
    p = checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    if not p.eps.any():
        return p.original.clone()
    with attack_mode(model), torch.enable_grad():
        point = p.x.clone().requires_grad_(True)  # a new leaf; the caller's `x` is not touched
        logits = p.logits(model, point, check=True)
        (grad,) = torch.autograd.grad(losses.total(logits, p.y, p.target, p.loss), point)
    return p.finish(norms.ball(p.x, p.eps, p.norm, p.clip).step(p.x, grad, p.eps))
