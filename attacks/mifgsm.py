"""Momentum Iterative FGSM, with input diversity and translation invariance for transfer."""

from __future__ import annotations

import math

import torch
from torch import nn

from attacks import checks, losses, norms, transforms
from attacks.noise import Noise
from attacks.runtime import attack_mode


def mifgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    decay: float = 1.0,
    diversity: float = 0.0,
    diversity_scale: float = transforms.DIVERSITY_SCALE,
    translation: int = 0,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Momentum Iterative FGSM, Dong et al. 2018 (https://arxiv.org/abs/1710.06081).

    From `x`, take `steps` steps along an accumulated gradient
    `g <- decay * g + grad / ||grad||_1` (each sample's gradient normalized by
    its own L1 norm, as in the paper), each step `step_size * sign(g)` for
    L-inf or `step_size * g / ||g||_2` for L2, projected onto the eps-ball and
    clipped. The momentum keeps the direction steady across steps, which makes
    the perturbation transfer to other models better than I-FGSM's;
    `decay=0` is I-FGSM (the basic iterative method, PGD without a random
    start). Two options help transfer further:

    - `diversity` (DIM, Xie et al. 2019, https://arxiv.org/abs/1803.06978):
      at each step, with this probability, the model sees the input shrunk
      to a random size and zero-padded back at a random offset. With `seeds`
      each sample draws its own (`transforms.diverse_per_sample`), so results
      do not depend on the batch; with `generator` one draw covers the whole
      batch, as in the paper and torchattacks' DIFGSM (`transforms.diverse`).
    - `translation` (TI, Dong et al. 2019, https://arxiv.org/abs/1904.02884):
      the gradient is smoothed with a Gaussian kernel of this size before it
      is normalized (`transforms.smooth_gradient`).

    Each step costs one forward and one backward pass with respect to the
    input. The model runs in eval mode and is left exactly as it was found;
    randomness (diversity only) comes only from `seeds` (else `generator`).

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor, finite and >= 0.
        norm: `"linf"` or `"l2"`; every norm is taken per sample over `x.flatten(1)`.
        steps: Gradient steps, >= 1.
        step_size: Length of one step; None means `eps / steps`, as in the paper.
        decay: Momentum factor `mu`, finite and >= 0; the paper uses 1.0.
        diversity: Probability in `[0, 1]` of transforming the input at a step;
            0 turns input diversity off. Needs `(N, C, H, W)` images.
        diversity_scale: Smallest side of the shrunk image as a fraction of the
            image's side, in `(0, 1)`; the default 0.9 is torchattacks' DIFGSM
            `resize_rate`.
        translation: Size of the Gaussian kernel (odd), 0 for off. Needs
            `(N, C, H, W)` images. The paper uses 15 on 299-pixel images.
        target: None for an untargeted attack, else the class each sample should become.
        loss: `"ce"`, `"lecture"` or `"margin"` (see `attacks.losses.objective`).
        clip: Valid input range `(low, high)`, or None for no clipping.
        generator: Used only without `seeds`: one seed per batch position is
            drawn from it (None: a fresh generator seeded with 0), so results
            are reproducible and the global random state is never used.
        seeds: Per-sample seeds `(N,)` (int64): each sample's diversity draws
            (stream `("diversity", step)` of `attacks.noise.Noise`) depend only
            on its own seed, so its result does not depend on the batch.

    Returns:
        The adversarial inputs, detached, with `x`'s shape, dtype and device.

    Raises:
        ValueError: For a bad argument; the message names it.

    Shape:
        x `(N, ...)` (`(N, C, H, W)` with `diversity` or `translation`), y `(N,)`,
        target `(N,)` -> same shape as x.
    """
    p = checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    checks.check_count("steps", steps)
    if step_size is None:
        size = p.eps / steps
    else:
        size = torch.full_like(p.eps, checks.check_step_size(step_size))
    decay = _check_decay(decay)
    diversity = transforms.check_probability("diversity", diversity)
    scale = transforms.check_scale("diversity_scale", diversity_scale)
    if diversity:
        transforms.check_images("diversity", p.x)
    if transforms.check_kernel_size("translation", translation):
        transforms.check_images("translation", p.x)
    if not p.eps.any():
        return p.original.clone()
    noise = (
        Noise.of(p.x, seeds=seeds, generator=generator) if diversity and seeds is not None else None
    )
    if diversity and seeds is None and generator is None:
        generator = torch.Generator(device=p.x.device).manual_seed(0)
    kernel = (
        transforms.gaussian_kernel(translation, dtype=p.x.dtype, device=p.x.device)
        if translation
        else None
    )
    ball = norms.ball(p.x, p.eps, p.norm, p.clip)
    point, momentum = p.x, torch.zeros_like(p.x)
    tiny = torch.finfo(p.x.dtype).tiny
    with attack_mode(model), torch.enable_grad():
        for i in range(steps):
            point = point.detach().requires_grad_(True)  # a new leaf; `x` is not touched
            seen = point
            if noise is not None:
                seen = transforms.diverse_per_sample(point, diversity, scale, noise, "diversity", i)
            elif diversity and generator is not None:
                seen = transforms.diverse(point, diversity, scale, generator)
            logits = p.logits(model, seen, check=i == 0)
            (grad,) = torch.autograd.grad(losses.total(logits, p.y, p.target, p.loss), point)
            if kernel is not None:
                grad = transforms.smooth_gradient(grad, kernel)
            length = grad.flatten(1).abs().sum(dim=1).clamp_min(tiny)  # ||grad||_1 per sample
            momentum = momentum.mul(decay).addcdiv(grad, length.view(-1, *[1] * (grad.ndim - 1)))
            point = ball.step(point.detach(), momentum, size)
    # The budget, enforced on the way out (every point is inside already: it stays bit for bit).
    return p.finish(ball.project(point))


def _check_decay(decay: object) -> float:
    """Return `decay` if it is a finite number >= 0."""
    if (
        isinstance(decay, bool)
        or not isinstance(decay, (int, float))
        or not (math.isfinite(decay) and decay >= 0)
    ):
        raise ValueError(f"decay must be a finite number >= 0, got {decay!r}")
    return float(decay)
