"""Projected Gradient Descent: repeated FGSM steps projected onto the eps-ball."""

from __future__ import annotations

import torch
from torch import nn

from attacks import checks, losses, norms
from attacks.noise import Noise
from attacks.runtime import attack_mode


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
    seeds: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected Gradient Descent, Madry et al. 2018 (https://arxiv.org/abs/1706.06083).

    From a random point of the eps-ball (or from `x`), take `steps` gradient
    steps (`Ball.step`, the same step as FGSM), each projected back onto the
    ball and clipped. Each step costs one forward and one backward pass with
    respect to the input. The model runs in eval mode and is left exactly as it
    was found; randomness comes only from `seeds` (else `generator`).

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
        generator: Used only without `seeds`: one seed per batch position is
            drawn from it (None: a fresh generator seeded with 0), so results
            are reproducible and the global random state is never used.
        early_stop: Stop updating a sample as soon as the attack succeeds on it
            (untargeted: misclassified; targeted: classified as `target`) and
            keep that point. Saves work; the returned point is then the first
            success rather than the last iterate.
        seeds: Per-sample seeds `(N,)` (int64). Each sample's random starts
            (restart `r > 0` uses `Noise.fork("restart", r)` of them)
            depend only on its own seed, so the result of a sample does not
            depend on the batch it is in, its position or the batch size.
        start: Starting points `(N, ...)` of the first restart (a warm start,
            e.g. an adversarial point found at another budget), projected onto
            the eps-ball and `clip`; they replace the random start of that
            restart (later restarts start at random as usual). None: the first
            restart starts as `random_start` says.

    Returns:
        The adversarial inputs, detached, with `x`'s shape, dtype and device.

    Raises:
        ValueError: For a bad argument; the message names it.

    Shape:
        x `(N, ...)`, y `(N,)`, target `(N,)` -> `(N, ...)`.
    """
    p = checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    checks.check_count("steps", steps)
    checks.check_count("restarts", restarts)
    if step_size is None:
        size = 2.5 * p.eps / steps
    else:
        size = torch.full_like(p.eps, checks.check_step_size(step_size))
    if start is not None:
        start = checks.check_start(start, p.x)
    if not p.eps.any():
        return p.original.clone()
    noise = Noise.of(p.x, seeds=seeds, generator=generator) if random_start else None
    ball = norms.ball(p.x, p.eps, p.norm, p.clip)
    best = _Best(p.x) if restarts > 1 else None
    with attack_mode(model), torch.enable_grad():
        for restart in range(restarts):
            todo = best.todo() if best is not None else slice(None)
            point = p.x[todo]
            if start is not None and restart == 0:  # a warm start, inside the ball
                point = ball.project(start)
            elif noise is not None:  # each sample's own draw: the same whatever was fooled before
                point = norms.random_start(
                    point, p.eps[todo], norm, p.clip, _restart(noise, restart).select(todo), "start"
                )
            live = _Live(p.select(todo), ball.select(todo), size[todo], point)
            for i in range(steps):  # the Madry loop: FGSM step, project, repeat
                live.gradient(model, check=i == 0)
                if early_stop and not live.retire_successes():
                    break
                live.point = live.ball.step(live.point, live.grad, live.size)
            found = live.finish(model, evaluate=best is not None)
            if best is None:  # a single run: its points are the result
                return p.finish(ball.project(found[0]))
            best.keep(todo, *found)
            if best.success.all():
                break
    assert best is not None  # a single run returned above
    # The budget, enforced on the way out (every point is inside already: it stays bit for bit).
    return p.finish(ball.project(best.x))


def _restart(noise: Noise, restart: int) -> Noise:
    """The random streams of a restart: the samples' own seeds first, then seeds forked from them."""
    return noise if restart == 0 else noise.fork("restart", restart)


class _Best:
    """Each sample's best point over restarts: a success first, else the highest objective."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.value = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)

    def todo(self) -> slice | torch.Tensor:
        """The samples worth another restart: those not fooled yet (a view when all are)."""
        return slice(None) if not self.success.any() else (~self.success).nonzero().squeeze(1)

    def keep(
        self,
        todo: slice | torch.Tensor,
        x: torch.Tensor,
        success: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        """Take a restart's results where they beat the best so far."""
        # `todo` holds no success yet, so a success always wins.
        better = success | (value >= self.value[todo])
        rows = torch.arange(len(self.x), device=self.x.device)[todo][better]
        self.x[rows], self.success[rows], self.value[rows] = (
            x[better],
            success[better],
            value[better],
        )


class _Live:
    """One PGD run's samples that are still being stepped, and what the stopped ones reached.

    The whole batch is stepped without any indexing until some sample stops
    early; then its point is stored and the live tensors are compacted, once
    per step that stops some.
    """

    def __init__(
        self, p: checks.Problem, ball: norms.Ball, size: torch.Tensor, point: torch.Tensor
    ):
        self.p, self.ball, self.size, self.point = p, ball, size, point
        self.rows = torch.arange(len(point), device=point.device)
        self.x_adv = torch.empty_like(point)
        self.success = torch.zeros(len(point), dtype=torch.bool, device=point.device)
        self.value = torch.full(
            (len(point),), float("-inf"), dtype=point.dtype, device=point.device
        )

    def gradient(self, model: nn.Module, check: bool) -> None:
        """The objective's gradient at the live points (one forward and one backward pass)."""
        point = self.point.detach().requires_grad_(True)
        self.logits = self.p.logits(model, point, check=check)
        objective = losses.total(self.logits, self.p.y, self.p.target, self.p.loss)
        (self.grad,) = torch.autograd.grad(objective, point)
        self.point = point.detach()

    def retire_successes(self) -> bool:
        """Stop the samples this step's logits show fooled; False when none is left."""
        done = losses.succeeded(self.logits.detach(), self.p.y, self.p.target)
        if done.any():
            # As indices: each boolean mask would find them again for every tensor.
            live, done = (~done).nonzero().squeeze(1), done.nonzero().squeeze(1)
            self.x_adv[self.rows[done]], self.success[self.rows[done]] = self.point[done], True
            self.rows, self.point, self.grad = self.rows[live], self.point[live], self.grad[live]
            self.p, self.ball, self.size = (
                self.p.select(live),
                self.ball.select(live),
                self.size[live],
            )
        return bool(len(self.rows))

    def finish(
        self, model: nn.Module, evaluate: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final points, whether each succeeded, and its objective (-inf where not evaluated).

        For samples not stopped early, success and objective cost one more
        forward pass, made only when `evaluate` (to compare restarts).
        """
        self.x_adv[self.rows] = self.point
        if evaluate and len(self.rows):
            with torch.no_grad():
                logits = self.p.logits(model, self.point)
                self.success[self.rows] = losses.succeeded(logits, self.p.y, self.p.target)
                self.value[self.rows] = losses.objective(
                    logits, self.p.y, self.p.target, self.p.loss
                )
        return self.x_adv, self.success, self.value
