"""Norms, step directions and projections onto the eps-ball.

Everything here works per sample: a batch `(N, ...)` is treated as `N` vectors
`x.flatten(1)`, so results never depend on the batch size and flat `(N, D)`
inputs work as well as images. Budgets `eps` are `(N,)` tensors.

FGSM is one step of a `ball`; PGD is `random_start` followed by repeated steps
of a `ball` built once per attack (`LinfBall.step`, `L2Ball.step`: the same step,
with the work that is the same at every step done up front).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from attacks.noise import Noise

NORMS = ("linf", "l2")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View `(N,)` values as `(N, 1, ..., 1)` so they broadcast against `like`."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a perturbation.

    Shape:
        delta `(N, ...)` -> `(N,)`.
    """
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    return torch.linalg.vector_norm(flat, dim=1)


def _like(point: torch.Tensor) -> torch.Tensor:
    """An empty tensor with `point`'s strides, to write a step's result into.

    Elementwise ops choose their own output strides, and with a dimension of
    size 1 (one channel) they need not keep their input's: a `(N, 1, H, W)`
    batch made from an `(N, H, W, 1)` array has channels-last strides, which
    a convolution follows, but a step's result would come out in the other
    layout (on the digits BN-CNN, a forward+backward 10% slower). So every
    point of an attack is laid out like `x`.
    """
    return torch.empty_like(point)


class LinfBall(NamedTuple):
    """Each sample's L-inf ball intersected with the clip box: itself a box.

    Kept as elementwise bounds `low = max(x - eps, clip_low)` and
    `high = min(x + eps, clip_high)`, so that projecting onto the ball and
    clipping is one `clamp`, and a step is one `addcmul` and one `clamp`.
    """

    low: torch.Tensor
    high: torch.Tensor

    def select(self, index: torch.Tensor | slice) -> LinfBall:
        """The balls of the samples `index` (indices or a boolean mask)."""
        return LinfBall(self.low[index], self.high[index])

    def project(self, point: torch.Tensor) -> torch.Tensor:
        """Project onto the ball and clip; points already inside are returned bit for bit."""
        return torch.clamp(point, self.low, self.high, out=_like(point))

    def step(self, point: torch.Tensor, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """`point + size * sign(grad)`, projected and clipped (`size` is `(N,)`)."""
        return self.project(point.addcmul(_per_sample(size, point), grad.sign()))


class L2Ball(NamedTuple):
    """Each sample's L2 ball `||point - x||_2 <= eps`, and the clip box (or None)."""

    x: torch.Tensor
    eps: torch.Tensor
    clip: tuple[float, float] | None

    def select(self, index: torch.Tensor | slice) -> L2Ball:
        """The balls of the samples `index` (indices or a boolean mask)."""
        return L2Ball(self.x[index], self.eps[index], self.clip)

    def project(self, point: torch.Tensor) -> torch.Tensor:
        """Project onto the ball and clip; points already inside are returned bit for bit.

        A perturbation longer than eps is scaled back onto the sphere
        (`project`), written `point + delta * (scale - 1)` so that a scale of
        exactly 1 leaves the point unchanged.
        """
        delta = point - self.x
        length = norm_of(delta, "l2").clamp_min(torch.finfo(delta.dtype).tiny)
        shrink = (self.eps / length).clamp(max=1.0) - 1.0
        inside = torch.addcmul(point, delta, _per_sample(shrink, delta), out=_like(point))
        return inside if self.clip is None else inside.clamp_(*self.clip)

    def step(self, point: torch.Tensor, grad: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """`point + size * grad / ||grad||_2`, projected and clipped (`size` is `(N,)`).

        A zero gradient does not move the point (`direction`).
        """
        length = norm_of(grad, "l2").clamp_min(torch.finfo(grad.dtype).tiny)
        # Normalized first: `size / length` can overflow for a zero gradient (`inf * 0` is NaN).
        direction = grad / _per_sample(length, grad)
        return self.project(point.addcmul(direction, _per_sample(size, grad)))


Ball = LinfBall | L2Ball


def ball(x: torch.Tensor, eps: torch.Tensor, norm: str, clip: tuple[float, float] | None) -> Ball:
    """Each sample's eps-ball around `x` in `norm`, intersected with the box `clip`.

    Built once per attack: its `step` and `project` then do per step only the
    work that depends on the point.

    Shape:
        x `(N, ...)`, eps `(N,)`.
    """
    if norm == "l2":
        return L2Ball(x, eps, clip)
    radius = _per_sample(eps, x)
    low, high = x - radius, x + radius
    if clip is not None:
        # Both bounds clamped into clip, so low <= high even for an x a hair outside it.
        low, high = low.clamp_(*clip), high.clamp_(*clip)
    return LinfBall(low, high)


def random_start(
    x: torch.Tensor,
    eps: torch.Tensor,
    norm: str,
    clip: tuple[float, float] | None,
    noise: Noise,
    *stream: int | str,
) -> torch.Tensor:
    """A random point of each sample's eps-ball, then clipped.

    L-inf: every coordinate uniform in `[-eps, eps]` (uniform in the box).
    L2: a uniformly random direction (a normalized Gaussian) with a radius drawn
    uniformly from `[0, eps]`, as torchattacks does. This is not uniform in the
    ball's volume: that draw (`eps * U ** (1 / d)`, foolbox and ART) puts
    nearly every start on the sphere in high dimension, and 10-20 steps of
    `2.5 * eps / steps` do not walk back from there. On the digits models,
    PGD-L2 with volume-uniform starts left 2-3 points more robust accuracy at
    mid-range eps than with this draw (shared/BENCHMARKING.md saw the same).

    Each sample's start comes from its own seed in `noise` and the `stream`
    (e.g. `("start", restart)`), so it does not depend on the batch.

    Shape:
        x `(N, ...)`, eps `(N,)` -> `(N, ...)`.
    """
    shape = x.shape[1:]
    if norm == "linf":
        delta = (2 * noise.uniform(shape, *stream, dtype=x.dtype) - 1) * _per_sample(eps, x)
    else:
        gaussian = noise.normal(shape, *stream, "direction", dtype=x.dtype)
        radius = eps * noise.uniform((), *stream, "radius", dtype=x.dtype)
        unit = gaussian / _per_sample(norm_of(gaussian, "l2").clamp_min(1e-12), x)
        delta = unit * _per_sample(radius, x)
    # Projecting undoes rounding that could leave the draw a hair outside the ball.
    return ball(x, eps, norm, clip).project(torch.add(x, delta, out=_like(x)))
