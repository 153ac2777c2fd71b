"""Projected Gradient Descent: repeated FGSM steps projected onto the eps-ball."""

from __future__ import annotations

import functools

import torch
from torch import nn

from attacks import _checks, losses, norms


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    early_stop: bool = False,
) -> torch.Tensor:
    """Projected Gradient Descent, Madry et al. 2018 (https://arxiv.org/abs/1706.06083).

    From a random point of the eps-ball (or from `x`), take `steps` gradient
    steps (`norms.step`, the same step as FGSM), each projected back onto the
    ball and clipped. Each step costs one forward and one backward pass with
    respect to the input. The model runs in eval mode and is left exactly as it
    was found; randomness comes only from `generator`.

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor, finite and >= 0.
        norm: `"linf"` or `"l2"`; every norm is taken per sample over `x.flatten(1)`.
        steps: Gradient steps per restart, >= 1.
        step_size: Length of one step; None means `2.5 * eps / steps`.
        random_start: Start from a random point of the eps-ball (uniform in the
            L-inf box; for L2 a uniform direction and a uniform radius, see
            `norms.random_start`).
        restarts: Independent runs, >= 1; each sample keeps its best (a success
            first, else the highest loss). A sample already fooled is not
            attacked again.
        target: None for an untargeted attack, else the class each sample should become.
        loss: `"ce"`, `"lecture"` or `"margin"` (see `attacks.losses.objective`).
        clip: Valid input range `(low, high)`, or None for no clipping.
        generator: Source of the random starts; None means a fresh generator
            seeded with 0, so results are reproducible and the global random
            state is never used.
        early_stop: Stop updating a sample as soon as the attack succeeds on it
            (untargeted: misclassified; targeted: classified as `target`) and
            keep that point. Saves work; the returned point is then the first
            success rather than the last iterate.

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
    _checks.check_count("steps", steps)
    _checks.check_count("restarts", restarts)
    if step_size is None:
        size = 2.5 * eps / steps
    else:
        size = torch.full_like(eps, _checks.check_step_size(step_size))
    clip = _checks.check_clip(clip, x)
    _checks.check_target(target, y)
    if not eps.any():
        return x.clone()
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)

    def start() -> torch.Tensor:
        # Drawn for the whole batch, so a restart starts the same whatever was fooled before.
        return norms.random_start(x, eps, norm, clip, generator) if random_start else x

    ball = norms.ball(x, eps, norm, clip)
    ascend = functools.partial(
        _ascend, model, steps=steps, loss=loss, early_stop=early_stop, evaluate=restarts > 1
    )
    with _checks.attack_mode(model), torch.enable_grad():
        # Best point per sample over restarts: a success first, else the highest objective.
        best, best_success, best_value = ascend(ball, start(), y, target, size)
        for _ in range(restarts - 1):
            if best_success.all():
                break
            todo = (~best_success).nonzero().squeeze(1)  # samples not fooled yet
            x_adv, success, value = ascend(
                ball.select(todo),
                start()[todo],
                y[todo],
                None if target is None else target[todo],
                size[todo],
            )
            # `todo` holds no success yet, so a success always wins.
            better = success | (value >= best_value[todo])
            keep = todo[better]
            best[keep] = x_adv[better]
            best_success[keep] = success[better]
            best_value[keep] = value[better]
    # The budget, enforced on the way out (every point is inside already: it stays bit for bit).
    return ball.project(best).detach().to(x.dtype)


def _ascend(
    model: nn.Module,
    ball: norms.Ball,
    start: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    size: torch.Tensor,
    *,
    steps: int,
    loss: str,
    early_stop: bool,
    evaluate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one PGD restart from `start`, a point of `ball`, with steps of length `size`.

    Returns the final points, and whether each succeeded and its objective
    (-inf where not evaluated). Samples stopped early succeeded; for the
    others, both cost one more forward pass, made only when `evaluate` (to
    compare restarts, where a success always wins, whatever its objective).

    The whole batch is stepped without any indexing until some sample stops
    early; then its result is stored and the tensors of the samples still
    live (`rows` of the outputs) are compacted, once per step that stops some.
    """
    x_adv = torch.empty_like(start)
    success = torch.zeros_like(y, dtype=torch.bool)
    value = torch.full(y.shape, float("-inf"), dtype=start.dtype, device=start.device)
    rows = torch.arange(len(y), device=y.device)
    point = start
    for i in range(steps):
        point = point.detach().requires_grad_(True)
        logits = model(point)
        if i == 0:
            _checks.check_logits(logits, y, target)
        (grad,) = torch.autograd.grad(losses.total(logits, y, target, loss), point)
        point = point.detach()
        if early_stop:
            # The logits of this step's forward already tell which points succeed.
            done = losses.succeeded(logits.detach(), y, target)
            if done.any():
                stopped, live = rows[done], ~done
                x_adv[stopped], success[stopped] = point[done], True
                rows, point, grad = rows[live], point[live], grad[live]
                y, size, ball = y[live], size[live], ball.select(live)
                target = None if target is None else target[live]
                if not len(rows):
                    break
        point = ball.step(point, grad, size)
    x_adv[rows] = point
    if evaluate and len(rows):
        with torch.no_grad():
            logits = model(point)
            success[rows] = losses.succeeded(logits, y, target)
            value[rows] = losses.objective(logits, y, target, loss)
    return x_adv, success, value
