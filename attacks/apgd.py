"""Auto-PGD: PGD with momentum and a step size that halves itself at checkpoints."""

from __future__ import annotations

import math

import torch
from torch import nn

from attacks import checks, losses, norms
from attacks.noise import Noise
from attacks.pgd import _Best, _restart
from attacks.runtime import attack_mode

# The paper's fixed constants: the first step is 2 * eps, and each step mixes
# the projected gradient step with the last move by `MOMENTUM`.
INITIAL_STEP = 2.0
MOMENTUM = 0.75


def checkpoints(steps: int) -> list[int]:
    """The steps after which APGD may halve its step size: `ceil(p_j * steps)`.

    `p_0 = 0`, `p_1 = 0.22`, `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`,
    kept in hundredths so that no rounding moves a checkpoint; those at or
    after the last step are dropped (a halving there would never be used).
    For 100 steps: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    found: list[int] = []
    before, now = 0, 22
    while now <= 100:
        at = -(-now * steps // 100)  # ceil without floats
        if 0 < at < steps and (not found or at > found[-1]):
            found.append(at)
        before, now = now, now + max(now - before - 3, 6)
    return found


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    random_start: bool = True,
    target: torch.Tensor | None = None,
    loss: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    early_stop: bool = False,
    rho: float = 0.75,
    seeds: torch.Tensor | None = None,
    misclassify: bool = False,
) -> torch.Tensor:
    """Auto-PGD, Croce & Hein 2020 (https://arxiv.org/abs/2003.01690).

    Gradient steps as PGD's (`Ball.step`: the sign for L-inf, the normalized
    gradient for L2), each mixed with the previous move (momentum 0.75) and
    projected onto the eps-ball and the box. The step size starts at `2 * eps`
    and each sample halves its own at the checkpoints (`checkpoints`) when
    fewer than a fraction `rho` of its steps since the last checkpoint raised
    the objective, or when its step size was not halved at the last checkpoint
    and its best objective has not improved since; on halving it restarts from
    its best point so far. The starting point is `norms.random_start` (the
    paper's L-inf start, rescaled there so one coordinate sits at eps, is
    nearly the same box; its L2 start lies on the sphere, ours at a uniform
    radius: the first step of 2 * eps reaches the sphere either way).

    Each run of `steps` steps costs `steps + 1` forward and `steps` backward
    passes (the start and every step are evaluated). A sample's result is its
    highest-objective point among those where the attack succeeded, else its
    highest-objective point. The model runs in eval mode and is left exactly
    as it was found; randomness comes only from `seeds` (else `generator`).

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor, finite and >= 0.
        norm: `"linf"` or `"l2"`; every norm is taken per sample over `x.flatten(1)`.
        steps: Steps per restart, >= 1 (the paper uses 100).
        restarts: Independent runs, >= 1; each sample keeps its best (a success
            first, else the highest objective). A sample already fooled is not
            attacked again.
        random_start: Start from a random point of the eps-ball, else from `x`.
        target: None for an untargeted attack, else the class each sample should become.
        loss: One of `attacks.LOSSES` (`"ce"`, `"dlr"`, `"margin"`, ...; see
            `attacks.losses.objective`).
        clip: Valid input range `(low, high)`, or None for no clipping.
        generator: Used only without `seeds`: one seed per batch position is
            drawn from it (None: a fresh generator seeded with 0).
        early_stop: Stop updating a sample as soon as the attack succeeds on
            it and keep that point.
        rho: The fraction of successful steps below which the step size is
            halved, in [0, 1].
        seeds: Per-sample seeds `(N,)` (int64): each sample's random starts
            (restart `r > 0` uses `attacks.noise.Noise.fork("restart", r)`) depend only
            on its own seed, so its result does not depend on the batch.
        misclassify: With a `target`, count any misclassification as a
            success (for keeping points and `early_stop`); the target only
            steers the loss. AutoAttack's APGD-T judges its runs this way.

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
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 <= rho <= 1:
        raise ValueError(f"rho must be a number in [0, 1], got {rho!r}")
    if not isinstance(misclassify, bool):
        raise ValueError(f"misclassify must be a bool, got {misclassify!r}")
    if not p.eps.any():
        return p.original.clone()
    noise = Noise.of(p.x, seeds=seeds, generator=generator) if random_start else None
    ball = norms.ball(p.x, p.eps, p.norm, p.clip)
    marks = checkpoints(steps)
    windows = dict(
        zip(marks, (b - a for a, b in zip([0, *marks], marks, strict=False)), strict=True)
    )
    best = _Best(p.x)
    with attack_mode(model), torch.enable_grad():
        for restart in range(restarts):
            todo = best.todo()
            start = p.x[todo]
            if noise is not None:  # each sample's own draw: the same whatever was fooled before
                start = norms.random_start(
                    start, p.eps[todo], norm, p.clip, _restart(noise, restart).select(todo), "start"
                )
            run = _Run(model, p.select(todo), ball.select(todo), start, misclassify)
            for i in range(1, steps + 1):
                if early_stop and not run.retire_successes():
                    break
                run.step(MOMENTUM if i > 1 else 1.0)
                run.evaluate(model, gradient=i < steps)
                if i in windows:
                    run.checkpoint(rho * windows[i])
            best.keep(todo, *run.finish())
            if best.success.all():
                break
    # The budget, enforced on the way out (every point is inside already: it stays bit for bit).
    return p.finish(ball.project(best.x))


def _per_sample(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a `(N,)` mask as `(N, 1, ..., 1)` so that it selects whole samples of `like`."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


class _Run:
    """One APGD run over the samples still being stepped, with each one's own step size.

    Per live sample: the current and previous point, the gradient, the step
    size, the best point (highest objective) with its gradient, and the
    counters the checkpoints read. What each sample has reached so far (a
    success first, else the highest objective) is kept for the whole run in
    `x_adv`, `success`, `value`, rows `rows`.
    """

    # The per-sample tensors that shrink when samples stop early.
    LIVE = (
        "rows",
        "size",
        "point",
        "previous",
        "grad",
        "current",
        "top",
        "top_grad",
        "top_value",
        "increases",
        "checked",
        "halved",
    )

    def __init__(
        self,
        model: nn.Module,
        p: checks.Problem,
        ball: norms.Ball,
        start: torch.Tensor,
        misclassify: bool = False,
    ) -> None:
        n, device = len(start), start.device
        self.p, self.ball, self.misclassify = p, ball, misclassify
        self.rows = torch.arange(n, device=device)
        self.size = INITIAL_STEP * p.eps
        self.point = self.previous = start
        self.x_adv = start.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        self.value = torch.full((n,), -math.inf, dtype=start.dtype, device=device)
        self.current = self.top_value = self.value.clone()
        self.top, self.grad = start, torch.zeros_like(start)
        self.top_grad = self.grad
        self.increases = torch.zeros(n, dtype=torch.int64, device=device)
        self.evaluate(model, gradient=True, check=True)
        self.increases.zero_()  # the start is where the counting begins
        self.checked = self.top_value.clone()
        self.halved = torch.ones(n, dtype=torch.bool, device=device)  # no condition 2 at first

    def step(self, momentum: float) -> None:
        """A projected gradient step, mixed with the last move: `x + m (z - x) + (1 - m)(x - x_prev)`."""
        z = self.ball.step(self.point, self.grad, self.size)
        if momentum != 1.0:
            z = self.ball.project(
                self.point
                + momentum * (z - self.point)
                + (1 - momentum) * (self.point - self.previous)
            )
        self.previous, self.point = self.point, z

    def evaluate(self, model: nn.Module, gradient: bool, check: bool = False) -> None:
        """Objective (and, if `gradient`, its gradient) at the points; update the bests."""
        point = self.point.detach().requires_grad_(gradient)
        with torch.set_grad_enabled(gradient):
            logits = self.p.logits(model, point, check=check)
            value = losses.objective(logits, self.p.y, self.p.target, self.p.loss)
            if gradient:
                (self.grad,) = torch.autograd.grad(value.sum(), point)
        value, logits = value.detach(), logits.detach()
        self.increases += value > self.current
        self.current = value
        higher = value > self.top_value
        self.top = torch.where(_per_sample(higher, point), point.detach(), self.top)
        self.top_grad = torch.where(_per_sample(higher, point), self.grad, self.top_grad)
        self.top_value = torch.where(higher, value, self.top_value)
        # The result: a success beats a failure, then the higher objective wins.
        success = losses.succeeded(logits, self.p.y, None if self.misclassify else self.p.target)
        old_success, old_value = self.success[self.rows], self.value[self.rows]
        better = (success & ~old_success) | ((success == old_success) & (value > old_value))
        rows = self.rows[better]
        self.x_adv[rows], self.success[rows], self.value[rows] = (
            point.detach()[better],
            success[better],
            value[better],
        )

    def checkpoint(self, fewest: float) -> None:
        """Halve the step size where progress stalled, and go back to the best point there."""
        halve = (self.increases < fewest) | (~self.halved & (self.top_value <= self.checked))
        self.halved, self.checked = halve, self.top_value.clone()
        self.increases = torch.zeros_like(self.increases)
        if halve.any():
            self.size = torch.where(halve, self.size / 2, self.size)
            back = _per_sample(halve, self.point)
            self.point = torch.where(back, self.top, self.point)
            self.grad = torch.where(back, self.top_grad, self.grad)
            self.current = torch.where(halve, self.top_value, self.current)

    def retire_successes(self) -> bool:
        """Stop the samples the attack has fooled; False when none is left."""
        live = ~self.success[self.rows]
        if not live.all():
            for name in self.LIVE:
                setattr(self, name, getattr(self, name)[live])
            self.p, self.ball = self.p.select(live), self.ball.select(live)
        return bool(len(self.rows))

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sample's result, whether it succeeded, and its objective."""
        return self.x_adv, self.success, self.value
