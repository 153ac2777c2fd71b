"""Square attack: random search over square-shaped changes, using only the model's scores."""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from attacks import checks, losses, norms
from attacks.noise import Noise
from attacks.pgd import _Best
from attacks.runtime import attack_mode

# The paper's schedule, in queries out of 10,000: the fraction of the image a
# square covers halves after each of these (rescaled to the attack's budget).
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    queries: int = 1000,
    p_init: float = 0.8,
    restarts: int = 1,
    target: torch.Tensor | None = None,
    loss: str = "margin",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    early_stop: bool = True,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Square attack, Andriushchenko et al. 2020 (https://arxiv.org/abs/1912.00049).

    Score-based: it needs the logits only, no gradients. From a start at the
    surface of the eps-ball (L-inf: vertical stripes of `+-eps`; L2: a grid of
    windows each holding a two-peaked pattern), each query proposes a change
    inside one random square window (L-inf: the window set to a corner,
    `+-eps` per channel; L2: mass moved into one window from another, keeping
    the norm at eps) and keeps it when the attack succeeds or the objective
    rises. The square covers a fraction `p_init` of the image at first and
    halves on the paper's schedule (`fraction`). Inputs that are not `(N, C, H,
    W)` images are searched as a `(C, 1, L)` strip (flat inputs: `(1, 1, D)`).

    Each query is one forward pass of the samples still searched; with
    `early_stop` a sample stops querying once fooled. A run costs at most
    `queries` forward passes per sample (the start is the first). Every draw
    (start signs, window positions, split axis, signs) is per sample, from its
    own seed. The model runs in eval mode and is left as it was found;
    randomness comes only from `seeds` (else `generator`).

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor, finite and >= 0.
        norm: `"linf"` or `"l2"`; every norm is taken per sample over `x.flatten(1)`.
        queries: Forward passes per sample per restart, >= 1.
        p_init: The fraction of the image the first squares cover, in (0, 1].
        restarts: Independent runs, >= 1; a sample already fooled is not
            attacked again; otherwise it keeps its highest objective.
        target: None for an untargeted attack, else the class each sample should become.
        loss: One of `attacks.LOSSES` (see `attacks.losses.objective`).
        clip: Valid input range `(low, high)`, or None for no clipping.
        generator: Used only without `seeds`: one seed per batch position is
            drawn from it (None: a fresh generator seeded with 0).
        early_stop: Stop querying for a sample once the attack succeeds on it.
        seeds: Per-sample seeds `(N,)` (int64): each sample's draws (streams
            `("start", restart)` and `("query", restart, query)` of
            `attacks.noise.Noise`) depend only on its own seed, so its result
            does not depend on the batch it is in.

    Returns:
        The adversarial inputs, detached, with `x`'s shape, dtype and device.

    Raises:
        ValueError: For a bad argument; the message names it.

    Shape:
        x `(N, ...)`, y `(N,)`, target `(N,)` -> `(N, ...)`.
    """
    p = checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    checks.check_count("queries", queries)
    checks.check_count("restarts", restarts)
    if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
        raise ValueError(f"p_init must be a number in (0, 1], got {p_init!r}")
    if not p.eps.any():
        return p.original.clone()
    noise = Noise.of(p.x, seeds=seeds, generator=generator)
    ball = norms.ball(p.x, p.eps, p.norm, p.clip)
    best = _Best(p.x)
    propose = _propose_l2 if p.norm == "l2" else _propose_linf
    with attack_mode(model), torch.no_grad():
        for restart in range(restarts):
            todo = best.todo()
            live, live_noise = p.select(todo), noise.select(todo)
            start = _start(live.x, live.eps, p.norm, live_noise, restart)
            search = _Search(
                model, live, ball.select(todo), ball.select(todo).project(start), live_noise
            )
            for query in range(1, queries):
                if early_stop and not search.retire_successes():
                    break
                window = _window(fraction(p_init, query - 1, queries), _as_image(p.x).shape, norm)
                draws = _Draws(search.noise, search.point, window, ("query", restart, query))
                search.offer(model, propose(search, window, draws))
            best.keep(todo, *search.finish())
            if best.success.all():
                break
    return p.finish(ball.project(best.x))


def fraction(p_init: float, query: int, queries: int) -> float:
    """The fraction of the image the square covers at `query` (0-based) of `queries`."""
    return p_init / 2 ** bisect.bisect_left(HALVINGS, query * 10_000 // queries)


def _as_image(t: torch.Tensor) -> torch.Tensor:
    """`t` seen as images `(N, C, H, W)`: flat `(N, D)` as `(N, 1, 1, D)`, `(N, C, L)` as
    `(N, C, 1, L)`, and any dimensions past the fourth folded into the width."""
    if t.ndim == 2:
        return t.reshape(len(t), 1, 1, -1)
    return t.unsqueeze(2) if t.ndim == 3 else t.flatten(3)


def _window(share: float, shape: torch.Size, norm: str) -> tuple[int, int]:
    """The window's (rows, columns): a square of `share` of the image's area.

    L2 windows are odd and at least 3 wide, so that the two-peaked pattern
    fits (the paper's rule). Where the image is thinner than the square, the
    window is a strip of about the same area.
    """
    height, width = shape[2], shape[3]
    area = share * height * width
    side = max(round(math.sqrt(area)), 3 if norm == "l2" else 1)
    side += norm == "l2" and side % 2 == 0
    rows, cols = min(side, height), min(side, width)
    if rows < side and cols == side:
        cols = min(width, max(side, round(area / rows)))
    elif cols < side and rows == side:
        rows = min(height, max(side, round(area / cols)))
    return rows, cols


class _Draws:
    """One query's randomness, per sample: two window corners, the split axis, and a
    sign per channel, each from the sample's own seed (`stream` names the query)."""

    def __init__(
        self, noise: Noise, x: torch.Tensor, window: tuple[int, int], stream: tuple
    ) -> None:
        image = _as_image(x)
        height, width = image.shape[2], image.shape[3]
        self.window = window
        self.first = _corner(noise, (height, width), window, (*stream, "first"))
        self.second = _corner(noise, (height, width), window, (*stream, "second"))
        self.axis = noise.integers(0, 1, *stream, "axis")
        signs = noise.signs(image.shape[1:2], *stream, "signs", dtype=x.dtype)
        self.signs = signs[:, :, None, None]  # (N, C, 1, 1)


class _Corner:
    """Per sample, the top-left corner of a window: `(N,)` rows and columns."""

    def __init__(self, top: torch.Tensor, left: torch.Tensor, shape: tuple, window: tuple):
        self.top, self.left, self.shape, self.window = top, left, shape, window

    def mask(self) -> torch.Tensor:
        """Each sample's window as a boolean mask `(N, 1, H, W)`."""
        (height, width), (rows, cols) = self.shape, self.window
        down = torch.arange(height, device=self.top.device)[None] - self.top[:, None]
        across = torch.arange(width, device=self.top.device)[None] - self.left[:, None]
        inside_rows, inside_cols = (down >= 0) & (down < rows), (across >= 0) & (across < cols)
        return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]

    def index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advanced indices of the windows into a channels-last `(N, H, W, C)` view."""
        rows, cols = self.window
        n = torch.arange(len(self.top), device=self.top.device)[:, None, None]
        down = (self.top[:, None] + torch.arange(rows, device=self.top.device))[:, :, None]
        across = (self.left[:, None] + torch.arange(cols, device=self.top.device))[:, None, :]
        return n, down, across

    def read(self, image: torch.Tensor) -> torch.Tensor:
        """Each sample's window of `image` `(N, C, H, W)`: `(N, C, rows, cols)`."""
        return image.permute(0, 2, 3, 1)[self.index()].permute(0, 3, 1, 2)

    def write(self, image: torch.Tensor, values: torch.Tensor) -> None:
        """Write `values` `(N, C, rows, cols)` into each sample's window of `image`, in place."""
        image.permute(0, 2, 3, 1)[self.index()] = values.permute(0, 2, 3, 1)


def _corner(noise: Noise, shape: tuple[int, int], window: tuple[int, int], stream: tuple):
    """A uniformly drawn window position per sample."""
    top = noise.integers(0, shape[0] - window[0], *stream, "top")
    left = noise.integers(0, shape[1] - window[1], *stream, "left")
    return _Corner(top, left, shape, window)


def _start(x: torch.Tensor, eps: torch.Tensor, norm: str, noise: Noise, restart: int):
    """The paper's starts: L-inf, vertical stripes of `x +- eps`; L2, a 5 x 5 grid of
    windows each holding `_pattern` with a random sign per channel, scaled to eps."""
    image = _as_image(x)
    n, c, height, width = image.shape
    if norm == "linf":
        delta = noise.signs((c, 1, width), "start", restart, dtype=x.dtype).expand_as(image)
    else:
        rows, cols = max(height // 5, 1), max(width // 5, 1)
        across, down = min(5, height // rows), min(5, width // cols)
        top, left = (height - across * rows) // 2, (width - down * cols) // 2
        signs = noise.signs((c, across, down), "start", restart, dtype=x.dtype)
        shape = _pattern(rows, cols, 0, x)
        delta = torch.zeros_like(image)
        for i in range(across):
            for j in range(down):
                block = delta[:, :, top + i * rows : top + (i + 1) * rows]
                block[..., left + j * cols : left + (j + 1) * cols] = (
                    shape * signs[:, :, i, j, None, None]
                )
    unit = delta.reshape(x.shape)
    scale = eps / norms.norm_of(unit, norm).clamp_min(torch.finfo(x.dtype).tiny)
    return x + unit * scale.view(-1, *([1] * (x.ndim - 1)))


def _peak(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """Nested rectangles around the centre, ring k weighing `1 / (k + 1)^2` (summed inwards)."""
    ring = torch.maximum(
        (torch.arange(rows, device=like.device) - rows // 2).abs()[:, None],
        (torch.arange(cols, device=like.device) - cols // 2).abs()[None, :],
    )
    weights = (
        1.0 / torch.arange(1, max(rows, cols) // 2 + 2, device=like.device, dtype=like.dtype) ** 2
    )
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[r] = sum of the weights of rings r and out
    return tail[ring]


def _pattern(rows: int, cols: int, axis: int, like: torch.Tensor) -> torch.Tensor:
    """The L2 update's shape: two `_peak`s of opposite sign side by side along `axis`
    (the other axis if this one is 1 long), with unit L2 norm."""
    sizes = [rows, cols]
    if sizes[axis] < 2:
        axis = 1 - axis
    if sizes[axis] < 2:
        return torch.ones(rows, cols, device=like.device, dtype=like.dtype)
    half, rest = list(sizes), list(sizes)
    half[axis], rest[axis] = sizes[axis] // 2, sizes[axis] - sizes[axis] // 2
    both = torch.cat([_peak(half[0], half[1], like), -_peak(rest[0], rest[1], like)], dim=axis)
    return both / torch.linalg.vector_norm(both)


def _propose_linf(search: _Search, window: tuple[int, int], draws: _Draws) -> torch.Tensor:
    """Move the window to a corner of the ball: `+-eps` per sample and channel."""
    size = (2 * search.p.eps).view(-1, 1, 1, 1)
    change = draws.first.mask() * (size * draws.signs)  # (N, C, H, W)
    return search.ball.project(search.point + change.reshape(search.point.shape))


def _propose_l2(search: _Search, window: tuple[int, int], draws: _Draws) -> torch.Tensor:
    """Move perturbation mass from the second window into the first, onto the eps-sphere.

    The first window gets the pattern (random sign per channel) plus its old
    content, rescaled to hold the mass both windows held and the budget left
    unused; the second window is emptied; the whole change is scaled to eps.
    """
    x, eps = _as_image(search.p.x), search.p.eps
    delta = _as_image(search.point) - x  # (N, C, H, W), a new tensor

    def energy(t: torch.Tensor) -> torch.Tensor:  # per sample and channel, (N, C, 1, 1)
        return t.square().sum(dim=(2, 3), keepdim=True)

    both = draws.first.mask() | draws.second.mask()  # (N, 1, H, W)
    unused = (eps.square() - energy(delta).sum(dim=1).flatten()).clamp_min(0) / delta.shape[1]
    tiny = torch.finfo(delta.dtype).tiny
    old = draws.first.read(delta)  # (N, C, rows, cols)
    patterns = torch.stack([_pattern(*window, axis, delta) for axis in (0, 1)])
    new = patterns[draws.axis][:, None] * draws.signs
    new = new + old / energy(old).sqrt().clamp_min(tiny)
    mass = (unused.view(-1, 1, 1, 1) + energy(delta * both)).sqrt()
    delta = delta * ~draws.second.mask()
    draws.first.write(delta, new / energy(new).sqrt().clamp_min(tiny) * mass)
    length = delta.flatten(1).norm(dim=1).clamp_min(tiny)
    moved = delta * (eps / length).view(-1, 1, 1, 1)
    return search.ball.project((x + moved).reshape(search.point.shape))


class _Search:
    """One Square run over the samples still searched: each one's best point so far."""

    def __init__(
        self,
        model: nn.Module,
        p: checks.Problem,
        ball: norms.Ball,
        start: torch.Tensor,
        noise: Noise,
    ) -> None:
        n = len(start)
        self.p, self.ball, self.point = p, ball, start
        self.noise = noise  # the live samples' own random streams
        self.rows = torch.arange(n, device=start.device)
        self.x_adv = start.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=start.device)
        self.value = torch.full((n,), -math.inf, dtype=start.dtype, device=start.device)
        self.offer(model, start, check=True)

    def offer(self, model: nn.Module, candidate: torch.Tensor, check: bool = False) -> None:
        """Query the model at `candidate`; keep it where it succeeds or raises the objective."""
        logits = self.p.logits(model, candidate, check=check)
        value = losses.objective(logits, self.p.y, self.p.target, self.p.loss)
        success = losses.succeeded(logits, self.p.y, self.p.target)
        old_success, old_value = self.success[self.rows], self.value[self.rows]
        better = (success & ~old_success) | ((success == old_success) & (value > old_value))
        self.success[self.rows] = torch.where(better, success, old_success)
        self.value[self.rows] = torch.where(better, value, old_value)
        self.point = torch.where(
            better.view(-1, *([1] * (candidate.ndim - 1))), candidate, self.point
        )

    def retire_successes(self) -> bool:
        """Stop the samples the attack has fooled; False when none is left."""
        done = self.success[self.rows]
        if done.any():
            self.x_adv[self.rows[done]] = self.point[done]
            live = ~done
            self.rows, self.point = self.rows[live], self.point[live]
            self.p, self.ball = self.p.select(live), self.ball.select(live)
            self.noise = self.noise.select(live)
        return bool(len(self.rows))

    def finish(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sample's best point, whether it succeeded, and its objective."""
        self.x_adv[self.rows] = self.point
        return self.x_adv, self.success, self.value
