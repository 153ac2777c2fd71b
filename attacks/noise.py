"""Per-sample random numbers: each sample's draws depend only on its own seed.

A counter-based generator (in the spirit of Philox and of JAX's keys, much
simpler): a draw is a hash of (the sample's seed, a stream naming the draw,
the element's position within the sample). Nothing is consumed, so a sample's
random start, restart or proposal is the same whatever the batch it is in,
its position there, and which other samples are still being attacked. This is
what makes results independent of batch size, order and sharding.

```python
noise = Noise.of(x, seeds=torch.tensor([11, 12, 13]))  # or generator=...
delta = noise.uniform(x.shape[1:], "start", restart)   # (N, ...) in (0, 1)
noise.select(still_live).normal((4,), "proposal", query)
```

The hash is 32-bit integer arithmetic (Chris Wellons' `lowbias32` mixer) on
int64 tensors; every multiplication is split in 16-bit halves so no product
reaches 2**63 (torch integer overflow is undefined behaviour). It is not a
cryptographic generator: it is meant for random starts and search proposals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

_M32 = 0xFFFFFFFF
_MIX = (0x7FEB352D, 0x846CA68B)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32: a bijection of 32-bit values with good avalanche."""
    x = x.clone(memory_format=torch.contiguous_format)
    return _mix_(x, torch.empty_like(x))


def _mix_(x: torch.Tensor, spare: torch.Tensor) -> torch.Tensor:
    """`_mix` in place, with `spare` (same shape) for the shifted and multiplied terms.

    No new tensor per operation: a draw for a batch of images has millions of
    elements, and allocating (and paging in) a fresh one for each of the
    hash's operations took 40% of its time. `x * c mod 2**32` is computed in
    16-bit halves of `c`, so no product reaches 2**49.
    """
    for shift, c in ((16, _MIX[0]), (15, _MIX[1]), (16, None)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=spare))
        if c is not None:
            torch.mul(x, c >> 16, out=spare).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
            x.mul_(c & 0xFFFF).add_(spare).bitwise_and_(_M32)
    return x


def _mix_int(x: int) -> int:
    """`_mix` for one Python int."""
    x &= _M32
    x ^= x >> 16
    x = (x * _MIX[0]) & _M32
    x ^= x >> 15
    x = (x * _MIX[1]) & _M32
    return x ^ (x >> 16)


def _fold(parts: tuple[int | str, ...]) -> int:
    """One 32-bit key for a stream named by ints and strings (stable across runs)."""
    key = 0x9E3779B9
    for part in parts:
        values = part.encode() if isinstance(part, str) else [part & _M32, (part >> 32) & _M32]
        for value in values:
            key = _mix_int(key ^ _mix_int(value + 0x632BE5AB))
    return key


@functools.lru_cache(maxsize=16)
def _elements(count: int, device: torch.device) -> torch.Tensor:
    """The hashed positions `(count,)` of a draw's elements (the same for every draw of that size)."""
    return _mix(torch.arange(count, device=device) ^ 0x27D4EB2F)


def _draw(key: torch.Tensor, element: torch.Tensor) -> torch.Tensor:
    """The 32-bit draw of each (stream key, hashed position) pair, broadcast together."""
    x = torch.bitwise_xor(key, element)
    spare = torch.empty_like(x)
    _mix_(x, spare).add_(key).bitwise_and_(_M32)
    return _mix_(x, spare)


class Noise:
    """Counter-based random numbers for a batch, one independent stream family per sample.

    Every draw takes a `stream` (ints and strings naming the draw, e.g.
    `("start", restart)`); the same sample seed and stream always give the
    same numbers. Draw each logical quantity from its own stream.
    """

    def __init__(self, seeds: torch.Tensor) -> None:
        self.seeds = seeds

    @functools.cached_property
    def _key(self) -> torch.Tensor:
        """Each sample's key `(N,)` in `[0, 2**32)`, hashed from its seed when first drawn from."""
        low, high = self.seeds & _M32, (self.seeds >> 32) & _M32
        return _mix(_mix(high ^ 0x85EBCA6B) ^ low)

    @classmethod
    def of(
        cls,
        x: torch.Tensor,
        *,
        seeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Noise:
        """Per-sample noise for the batch `x`: from `seeds`, else seeds drawn from `generator`.

        Without `seeds`, one seed per batch position is drawn from `generator`
        (a fresh one seeded with 0 if None), so results then depend on the batch.

        Raises:
            ValueError: If `seeds` is not an integer tensor of shape `(N,)`.
        """
        n = len(x)
        if seeds is None:
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(0)
            seeds = torch.randint(
                -(2**63), 2**63 - 1, (n,), generator=generator, device=generator.device
            )
        elif (
            not isinstance(seeds, torch.Tensor)
            or seeds.is_floating_point()
            or seeds.is_complex()
            or seeds.dtype == torch.bool
            or tuple(seeds.shape) != (n,)
        ):
            shown = (
                f"{seeds.dtype} {tuple(seeds.shape)}"
                if isinstance(seeds, torch.Tensor)
                else type(seeds).__name__
            )
            raise ValueError(f"seeds must be an integer tensor of shape ({n},), got {shown}")
        return cls(seeds.to(device=x.device, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.seeds)

    def select(self, index: torch.Tensor | slice) -> Noise:
        """The noise of the samples `index` (indices or a boolean mask)."""
        noise = Noise(self.seeds[index])
        if "_key" in self.__dict__:  # already hashed: its rows are the selection's keys
            noise.__dict__["_key"] = self._key[index]
        return noise

    def fork(self, *stream: int | str) -> Noise:
        """New per-sample seeds derived from each sample's own (e.g. one family per restart)."""
        return Noise(self.forks([stream])[0])

    def forks(self, streams: Sequence[tuple[int | str, ...]]) -> torch.Tensor:
        """The seeds `(S, N)` of `fork(*stream)` for each of the `streams`, hashed together."""

        def bits(part: str) -> torch.Tensor:  # (S, N): `bits((), *stream, part)` for each
            folds = [_fold((*stream, part)) for stream in streams]
            keys = _mix(self._key[None, :] ^ torch.tensor(folds, device=self.seeds.device)[:, None])
            return _draw(keys[..., None], _elements(1, self.seeds.device))[..., 0]

        return ((bits("fork-high") & 0x7FFFFFFF) << 32) | bits("fork-low")

    def bits(self, shape: tuple[int, ...] | torch.Size, *stream: int | str) -> torch.Tensor:
        """32-bit values in int64, `(N, *shape)`."""
        key = _mix(self._key ^ _fold(stream))  # (N,)
        element = _elements(math.prod(shape), self.seeds.device)  # (count,)
        return _draw(key[:, None], element[None, :]).view(len(self), *shape)

    def uniform(
        self,
        shape: tuple[int, ...] | torch.Size,
        *stream: int | str,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Uniform in the open interval `(0, 1)`, 24 random bits, `(N, *shape)`."""
        top = (self.bits(shape, *stream) >> 8).to(torch.float64)
        return ((top + 0.5) * 2.0**-24).to(dtype)

    def normal(
        self,
        shape: tuple[int, ...] | torch.Size,
        *stream: int | str,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Standard normal (Box-Muller), `(N, *shape)`."""
        u = self.uniform(shape, *stream, "radius", dtype=torch.float64)
        v = self.uniform(shape, *stream, "angle", dtype=torch.float64)
        return ((-2 * u.log()).sqrt() * torch.cos(2 * math.pi * v)).to(dtype)

    def integers(
        self, low: int | torch.Tensor, high: int | torch.Tensor, *stream: int | str
    ) -> torch.Tensor:
        """One integer per sample, uniform in `[low, high]` (both included; per-sample bounds allowed)."""
        u = self.uniform((), *stream, dtype=torch.float64)
        span = torch.as_tensor(high, device=u.device) - low + 1
        return (low + (u * span).floor().long().clamp(max=span - 1)).long()

    def signs(
        self,
        shape: tuple[int, ...] | torch.Size,
        *stream: int | str,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """`+1` or `-1`, each with probability 1/2, `(N, *shape)`."""
        return (2 * (self.bits(shape, *stream) & 1) - 1).to(dtype)
