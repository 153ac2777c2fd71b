"""Robustness curves: accuracy against the size of the allowed perturbation.

`robustness_curve` streams a data set through an attack at several budgets and
checks itself on the way (largest perturbation norm, NaNs, value range,
non-increasing curve), counts the forward and backward passes it spends, and
warns about models whose outputs make attacks unreliable. It knows attacks
only through `attacks.ATTACKS` and their signatures.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
import torch.distributed as dist
from torch import nn

import attacks
from attacks import norms
from attacks.checks import check_clip
from attacks.noise import Noise

from .trust import curve_flags, model_flags, wilson

TARGETS = ("random", "least-likely")

# How a curve is computed (see `robustness_curve`).
METHODS = ("descend", "per-eps")

# Steps of the warm probe of "descend": before a walking sample is attacked at an
# eps, this many steps from its last adversarial point projected there (measured
# against 2, 5 and steps from that point alone: fewest passes, and no weaker).
WARM_STEPS = 1

# The attack's own result must respect the budget up to this (float rounding).
NORM_TOLERANCE = 1e-6

# The cost entries of an eps that attacked nothing.
_NOTHING = {"forward": 0, "backward": 0}

# Options of an attack that robustness_curve sets itself.
_SET_BY_THE_CURVE = ("norm", "target", "generator", "seeds", "log")


def attack_options(attack: str) -> dict[str, Any]:
    """An attack's keyword options and their defaults, less those robustness_curve sets.

    Raises:
        ValueError: For an attack that is not in `attacks.ATTACKS`.
    """
    if attack not in attacks.ATTACKS:
        raise ValueError(f"attack must be one of {tuple(attacks.ATTACKS)}, got {attack!r}")
    parameters = _parameters(attacks.ATTACKS[attack]).values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is p.KEYWORD_ONLY and p.name not in _SET_BY_THE_CURVE
    }


def takes(attack: str, option: str) -> bool:
    """Whether the attack has the keyword option (e.g. `generator`, `early_stop`)."""
    parameters = _parameters(attacks.ATTACKS[attack])
    return option in parameters and parameters[option].kind is inspect.Parameter.KEYWORD_ONLY


@functools.lru_cache(maxsize=64)
def _parameters(function: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """A function's parameters (cached: the curve asks about every call's options)."""
    return inspect.signature(function).parameters


@dataclass
class Curve:
    """One robustness curve and how it was made.

    Attributes:
        epsilons: Budgets, increasing.
        accuracy: Per eps, the fraction of samples classified correctly under attack.
        success_rate: Per eps, the fraction the attack succeeds on (untargeted:
            misclassified; targeted: classified as the target).
        clean_accuracy: Accuracy without attack, on the same samples.
        n_samples: Samples evaluated.
        n_excluded: Samples left out because their true label is the `int` target.
        settings: The attack's full settings (defaults filled in), JSON-ready.
        seconds: Wall-clock time of the whole evaluation.
        intervals: Per eps, the 95% Wilson interval `[low, high]` of the accuracy.
        per_sample: `index` (each evaluated sample's position in `x`),
            `fooled_at` and `reached_at` (the smallest eps of the grid at which
            it was misclassified / brought to its target, None if never: its
            breaking budget on the grid), `target` (targeted curves). A
            sample counts as robust at eps when `fooled_at` is None or larger,
            so curves of several attacks combine per sample.
        flags: Warnings that the evaluation may not be trusted, each
            `{"code", "message"}` (see `advkit.trust`).
        checks: Per eps, `max_norm` (largest perturbation norm seen),
            `nan_count`, `min` / `max` of the adversarial inputs (None when no
            sample was attacked at that eps), `attacked` (samples attacked;
            `"descend"` counts a warm probe and the attack after it apart) and
            the `forward` / `backward` passes (per sample) the attack spent there.
        passes: Forward and backward passes of the model over the whole
            evaluation (clean pass, attacks, checks), counted per sample.
        examples: For the first `examples` samples (see `robustness_curve`),
            the clean inputs, labels, targets and, per eps, the adversarial
            input the curve counted; not part of `to_dict`.
    """

    epsilons: list[float]
    accuracy: list[float]
    success_rate: list[float]
    clean_accuracy: float
    n_samples: int
    n_excluded: int
    settings: dict[str, Any]
    seconds: float
    checks: list[dict[str, Any]]
    intervals: list[list[float]] = field(default_factory=list)
    per_sample: dict[str, list] = field(default_factory=dict)
    flags: list[dict[str, str]] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})
    examples: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def cost(self) -> dict[str, float]:
        """Forward and backward passes per evaluated sample."""
        n = max(self.n_samples, 1)
        return {kind: count / n for kind, count in self.passes.items()}

    def to_dict(self) -> dict[str, Any]:
        """The curve as plain JSON-ready values (without `examples`)."""
        d = dataclasses.asdict(dataclasses.replace(self, examples=None))
        d.pop("examples")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Curve:
        """Rebuild a curve written by `to_dict`; unknown keys are ignored.

        Raises:
            ValueError: When a field is missing.
        """
        optional = ("intervals", "per_sample", "flags", "passes", "examples")
        names = [f.name for f in dataclasses.fields(cls) if f.name not in optional]
        missing = [name for name in names if name not in d]
        if missing:
            raise ValueError(f"curve dict must have the fields {names}, missing {missing}")
        return cls(
            **{name: d[name] for name in names},
            intervals=[list(i) for i in d.get("intervals", [])],
            per_sample={k: list(v) for k, v in d.get("per_sample", {}).items()},
            flags=list(d.get("flags", [])),
            passes=dict(d.get("passes", {"forward": 0, "backward": 0})),
        )


def robustness_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float] = (0, 0.05, 0.1),
    attack: str = "pgd",
    norm: str = "linf",
    target: None | str | int = None,
    batch_size: int = 256,
    seed: int = 0,
    *,
    method: str | None = None,
    sample_ids: torch.Tensor | None = None,
    incremental: bool = True,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    examples: int = 0,
    **attack_kw: Any,
) -> Curve:
    """Accuracy of `model` under `attack` at each budget in `epsilons`.

    Budgets are nested balls, so a point that fools the model at a small eps is
    valid at every larger one, and each sample has a breaking budget on the
    grid (`Curve.per_sample["fooled_at"]`); the accuracy at eps is the share
    of samples whose breaking budget is larger (or who never broke): the curve
    is non-increasing by construction. Clean errors are never attacked, and
    attacks that can (`early_stop`) stop on each sample as soon as it succeeds
    (not on a model whose `randomized` attribute is true, such as a random
    defense of `advkit.defenses`: its success is judged on a fresh draw).
    Two methods find the breaking budgets:

    - `"descend"` (the default for attacks with `steps`, e.g. pgd, apgd,
      strong): attack every sample at the largest eps; then each sample that
      broke walks the grid down: at the next smaller eps, first its last
      adversarial point projected onto that ball is checked (one forward
      pass, repeated down the grid while it still fools); then, when the
      attack takes `start` (pgd), `WARM_STEPS` steps from that projected
      point (a warm probe); only then is it attacked there as at that eps
      alone (from the clean input, that eps's seeds); the first eps where
      the attack fails ends the walk, and the sample counts as robust below
      it (a success at eps is one at every larger eps; a failure is
      inferred at smaller ones). A warm probe never replaces the attack's
      failure: every sample counted robust at eps failed the attack at eps.
      Each sample pays about one failed attack, where attacking eps by eps
      pays one per eps below its breaking budget. Samples at different eps
      share attack calls, each at its own eps with that eps's seeds; while
      other samples still walk, those due for the attack wait for a full
      batch. The passes (and a staged attack's `stages` log) of a batch are
      shared out over its eps by samples.
    - `"per-eps"` (the default otherwise): eps by eps upwards, each attacking
      only the samples no smaller eps has fooled (untargeted) or brought to
      the target (targeted).

    Every random choice of the attack at eps index `i` comes from per-sample
    seeds derived from (`seed`, `i`, the sample's index in `x`), and random
    targets from (`seed`, index): each sample's result is the same for any
    `batch_size`, sample order or split of the data (given a model whose
    per-sample outputs do not depend on the batch it is in).

    Args:
        model: Maps `x` to logits `(N, K)` (or a tuple, dict or object holding
            them, see `attacks.logits_of`).
        x: Inputs in `[0, 1]` (or inside the `clip` given in `attack_kw`); they
            may stay on the CPU, each batch is moved to `device`.
        y: True labels.
        epsilons: Budgets, finite, >= 0 and increasing. Eps 0 is the clean accuracy.
        attack: A name in `attacks.ATTACKS`.
        norm: `"linf"` or `"l2"`.
        target: None (untargeted), `"random"` (a uniformly drawn wrong class per
            sample), `"least-likely"` (the clean model's least probable wrong
            class) or an `int` class (samples whose true label is that class are
            left out and counted in `n_excluded`).
        batch_size: Samples per attack call; memory does not grow with `N`.
        seed: Seeds every random choice (random targets, random starts); the
            global random state is neither used nor changed.
        method: `"descend"` or `"per-eps"` (see above); None picks `"descend"`
            for attacks with `steps` and `"per-eps"` for the others.
        sample_ids: Each sample's identity `(N,)` (int64; its index in the
            whole dataset), from which its random choices derive; None means
            its position in `x`. Give it when `x` is a reordered or partial
            view of a dataset, so each sample keeps its own randomness
            (stored as `per_sample["sample_id"]`).
        incremental: False attacks every sample at every eps from scratch, as
            peer libraries do (for benchmarks; `method` is then `"scratch"`);
            the curve is then usually, but not by construction, non-increasing.
        device: Where the model runs; None means the device of its first
            parameter (CPU if it has none).
        progress: Called as `progress(eps_index, done, total)` after each
            attacked batch, `done` of the `total` samples attacked at that eps;
            an eps with nothing to attack reports once with `0, 0` (`"descend"`:
            after each batch of attacks, not probes, with the largest eps index
            in the batch and the counts of the samples attacked together; then
            `0, 0` for each eps it never attacked).
        examples: Keep, for the first this many evaluated samples, the
            adversarial input the curve counted at every eps (`Curve.examples`,
            for galleries that show exactly what the curve measured).
        **attack_kw: Further options of the attack (`steps`, `step_size`,
            `restarts`, `loss`, `clip`, `early_stop`, ...). `generator` is not
            accepted: it comes from `seed`.

    Returns:
        The curve, with the attack's full settings, per-eps self-checks and
        the passes it spent.

    Raises:
        ValueError: For a bad argument; the message names it.

    Under `torchrun` (an initialized process group, and no `sample_ids`), the
    samples are shared out across the ranks by `advkit.distributed.distributed_curve`
    and every rank gets the single-process curve.

    Shape:
        x `(N, ...)`, y `(N,)`.
    """
    if sample_ids is None and dist.is_available() and dist.is_initialized():
        from .distributed import distributed_curve  # shards by index, calls back with sample_ids

        return distributed_curve(
            model, x, y, epsilons, attack, norm, target, batch_size, seed, method=method,
            incremental=incremental, device=device, examples=examples, **attack_kw,
        )  # fmt: skip
    started = time.perf_counter()
    epsilons = _check_arguments(x, y, epsilons, attack, norm, target, batch_size, seed, attack_kw)
    method = _check_method(method, attack, incremental)
    ids = _check_sample_ids(sample_ids, len(x))
    if takes(attack, "early_stop"):
        # A randomized model (`advkit.defenses`, e.g. random resize) is judged on a
        # fresh draw of its randomness: a point that has just crossed the attack's own
        # (EOT-averaged) boundary fools about half the draws, so every sample keeps
        # stepping (on digits, EOT-8 PGD-20 through resize:0.1: 0.62 with early stopping,
        # 0.43 without, undefended 0.42).
        randomized = bool(getattr(model, "randomized", False))
        attack_kw.setdefault("early_stop", incremental and not randomized)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with attacks.count_passes(model) as passes:
        run = _Evaluation(
            model, x, y, target, batch_size, torch.device(device), seed, epsilons,
            ids, given_ids=sample_ids is not None,
        )  # fmt: skip
        run.keep_examples(examples)
        options = {"norm": norm, **attack_kw}
        if method == "descend":
            run.descend(attack, options, progress, passes)
        else:
            for i, eps in enumerate(epsilons):
                run.attack_at(i, eps, attack, options, incremental, progress)
    if incremental:  # nested balls: each eps keeps every success of the smaller ones
        assert run.accuracy == sorted(run.accuracy, reverse=True), run.accuracy
        assert run.success_rate == sorted(run.success_rate), run.success_rate
    clip = attack_kw.get("clip", attack_options(attack).get("clip", (0.0, 1.0)))
    return Curve(
        epsilons=epsilons,
        accuracy=run.accuracy,
        success_rate=run.success_rate,
        clean_accuracy=int((~run.clean_fooled).sum()) / run.n,
        n_samples=run.n,
        n_excluded=len(y) - run.n,
        settings=_settings(attack, norm, target, seed, batch_size, method, attack_kw),
        seconds=time.perf_counter() - started,
        checks=run.checks,
        intervals=[list(wilson(round(a * run.n), run.n)) for a in run.accuracy],
        per_sample=run.per_sample(),
        flags=run.flags + curve_flags(epsilons, run.accuracy, norm, clip),
        passes={"forward": passes.forward, "backward": passes.backward},
        examples=run.examples,
    )


def _check_sample_ids(sample_ids: object, n: int) -> torch.Tensor:
    """The samples' ids as int64 `(n,)` (default `arange(n)`); raise unless well formed."""
    if sample_ids is None:
        return torch.arange(n)
    if (
        not isinstance(sample_ids, torch.Tensor)
        or sample_ids.is_floating_point()
        or sample_ids.is_complex()
        or sample_ids.dtype == torch.bool
        or tuple(sample_ids.shape) != (n,)
    ):
        shown = (
            f"{sample_ids.dtype} {tuple(sample_ids.shape)}"
            if isinstance(sample_ids, torch.Tensor)
            else type(sample_ids).__name__
        )
        raise ValueError(f"sample_ids must be an integer tensor of shape ({n},), got {shown}")
    return sample_ids.detach().cpu().long()


def _check_method(method: str | None, attack: str, incremental: bool) -> str:
    """The method's name: `"scratch"` when not incremental, else `method` or the attack's default."""
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be None or one of {METHODS}, got {method!r}")
    if not incremental:
        return "scratch"
    return method or ("descend" if takes(attack, "steps") else "per-eps")


class _Evaluation:
    """The state of one curve: per sample, what the attacks have found so far.

    What a smaller eps found stays valid at every larger one (nested balls).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: None | str | int,
        batch_size: int,
        device: torch.device,
        seed: int,
        epsilons: list[float],
        ids: torch.Tensor,
        given_ids: bool,
    ) -> None:
        self.model, self.x, self.batch_size, self.device = model, x, batch_size, device
        self.seed, self.epsilons = seed, epsilons
        y = y.detach().cpu().long()
        keep = y != target if isinstance(target, int) else torch.ones_like(y, dtype=torch.bool)
        if not keep.any():
            raise ValueError(f"target={target!r} leaves no sample: every true label is that class")
        self.index = keep.nonzero().squeeze(1)  # positions in x of the samples evaluated
        self.y = y[self.index]
        self.n = len(self.y)
        clean_logits, self.clean_check = _clean_pass(model, x, self.index, batch_size, device)
        self.target, self.clean_logits = target, clean_logits
        # Before anything reads the targets: they come from the samples' ids.
        self.identify(ids, given=given_ids)
        first = self.index[: min(batch_size, self.n)]
        inputs, labels = x[first.to(x.device)].to(device), self.y[: len(first)]
        self.flags = model_flags(model, inputs, labels, clean_logits[: len(first)])
        for f in self.flags:
            warnings.warn(f["message"], UserWarning, stacklevel=3)
        everyone = torch.arange(self.n)
        self.clean_fooled = clean_logits.argmax(dim=1) != self.y
        self.clean_reached = self.succeeded(clean_logits.argmax(dim=1), everyone)
        self.fooled, self.reached = self.clean_fooled.clone(), self.clean_reached.clone()
        # Per sample, the smallest eps of the grid at which it counted as fooled
        # (reached its target); NaN while it never has. Clean errors count from the start.
        self.fooled_at = torch.full((self.n,), math.nan, dtype=torch.float64)
        self.reached_at = torch.full((self.n,), math.nan, dtype=torch.float64)
        self.accuracy: list[float] = []
        self.success_rate: list[float] = []
        self.checks: list[dict[str, Any]] = []
        self.examples: dict[str, torch.Tensor] | None = None

    def identify(self, ids: torch.Tensor, given: bool) -> None:
        """Derive each sample's random streams (targets, attacks) from its id, never its batch
        position; `ids` has one entry per sample of `x`."""
        self.ids, self.given_ids = ids[self.index], given
        self.noise = Noise(self.ids)
        self._seeds: torch.Tensor | None = None
        self.targets = _targets(
            self.target, self.y, self.clean_logits, self.noise.fork("target", self.seed)
        )

    def per_sample(self) -> dict[str, list]:
        """The per-sample results, JSON-ready (NaN as None)."""

        def listed(t: torch.Tensor) -> list:
            return [None if math.isnan(v) else v for v in t.tolist()]

        result = {
            "index": self.index.tolist(),
            "fooled_at": listed(self.fooled_at),
            "reached_at": listed(self.reached_at),
        }
        if self.targets is not None:
            result["target"] = self.targets.tolist()
        if self.given_ids:
            result["sample_id"] = self.ids.tolist()
        return result

    def succeeded(self, prediction: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Untargeted: misclassified; targeted: classified as the target."""
        targets = None if self.targets is None else self.targets[samples]
        return attacks.losses.prediction_succeeded(prediction, self.y[samples], targets)

    def inputs(self, samples: torch.Tensor) -> torch.Tensor:
        return self.x[self.index[samples].to(self.x.device)].to(self.device)

    def keep_examples(self, n: int) -> None:
        """Keep the first `n` samples' adversarial inputs at every eps (clean at first)."""
        if n <= 0:
            return
        first = torch.arange(min(n, self.n))
        clean = self.inputs(first).cpu()
        targets = self.targets[first] if self.targets is not None else torch.full_like(first, -1)
        # "current" is overwritten in place as eps grows: its own copy, never the clean one.
        self.examples = {
            "x": clean, "y": self.y[first], "target": targets, "current": clean.clone()
        }  # fmt: skip
        self.adversarial: list[torch.Tensor] = []

    def attack_at(
        self,
        i: int,
        eps: float,
        attack: str,
        options: dict[str, Any],
        incremental: bool,
        progress: Callable[[int, int, int], None] | None,
    ) -> None:
        """Attack the samples that still need it at `eps`, then record the curve's point."""
        todo = torch.arange(self.n)[:0]
        check = _Check()
        if eps > 0:
            if not incremental:  # from scratch: forget what smaller budgets found
                self.fooled, self.reached = self.clean_fooled.clone(), self.clean_reached.clone()
            todo = torch.arange(self.n)[~self.reached] if incremental else torch.arange(self.n)
        stages: list[dict[str, Any]] = []
        if takes(attack, "log"):  # an attack made of stages reports each
            options = {**options, "log": stages}
        with attacks.count_passes(self.model) as passes:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                self.attack_batch(batch, i, attack, options, check)
                if progress is not None:
                    progress(i, start + len(batch), len(todo))
        if progress is not None and not len(todo):
            progress(i, 0, 0)
        result = self.clean_check if eps == 0 else check.result(eps, options["norm"])
        spent = {"forward": passes.forward, "backward": passes.backward}
        self.checks.append({**result, **spent, **({"stages": _merge(stages)} if stages else {})})
        self.accuracy.append(int((~self.fooled).sum()) / self.n)
        self.success_rate.append(int(self.reached.sum()) / self.n)
        self.fooled_at[self.fooled & self.fooled_at.isnan()] = eps
        self.reached_at[self.reached & self.reached_at.isnan()] = eps
        if self.examples is not None:
            self.adversarial.append(self.examples["current"].clone())
            self.examples["x_adv"] = torch.stack(self.adversarial, dim=1)  # (n, eps, ...)

    def descend(
        self,
        attack: str,
        options: dict[str, Any],
        progress: Callable[[int, int, int], None] | None,
        passes: attacks.Passes,
    ) -> None:
        """The `"descend"` method: attack at the largest eps, then walk each broken sample down.

        `fooled_level` / `reached_level` hold each sample's breaking level on
        the grid (the index of the smallest eps where it was fooled / reached,
        `len(epsilons)` if never). A sample that broke at a level moves to the
        level below: first its point projected there is checked (one forward
        pass, repeated while it keeps succeeding), then probed from that point
        (`WARM_STEPS` steps, attacks that take `start`), then attacked there
        from the clean input. A failure ends its walk. Walks are independent:
        probes and attacks batch samples at different levels together (each
        at its own eps with its own seeds), and a sample due for the attack
        waits, while others walk, until a full batch is due (a small batch
        costs nearly as much per step as a full one); what a sample gets does
        not depend on whom it was batched with.
        """
        levels, self.norm, self.passes = len(self.epsilons), options["norm"], passes
        self.fooled_level = torch.where(self.clean_fooled, 0, levels)
        self.reached_level = torch.where(self.clean_reached, 0, levels)
        self.points = torch.empty((self.n, *self.x.shape[1:]), dtype=self.x.dtype)
        if self.examples is not None:
            self.examples["x_adv"] = self.examples["x"][:, None].repeat_interleave(levels, dim=1)
        self.level_checks = [_Check() for _ in range(levels)]
        self.spent = [[0.0, 0.0] for _ in range(levels)]  # forward, backward
        self.stages: list[list[dict[str, Any]]] = [[] for _ in range(levels)]
        self.grid = torch.tensor(self.epsilons, dtype=torch.float64)
        # Per sample, the highest level known robust (the attack failed there; eps 0 counts).
        self.lo = torch.full((self.n,), int((self.grid == 0).sum()) - 1)
        top = levels - 1
        self.level = torch.full((self.n,), top)
        # Samples waiting for the attack at their level (all of them at the top first), and
        # samples walking down through projected points and warm probes.
        waiting = torch.arange(self.n)[~self.clean_reached]
        if self.epsilons[top] == 0:
            waiting = waiting[:0]
        walking = waiting[:0]
        warm = takes(attack, "start") and takes(attack, "steps")
        while len(waiting) or len(walking):
            broke = walking[:0]  # samples that just broke at their level
            if len(walking) and warm:  # a short probe from the last point
                self.probe(walking, attack, options)
                hit = self.reached_level[walking] == self.level[walking]
                waiting, broke = torch.cat([waiting, walking[~hit]]), walking[hit]
            elif len(walking):
                waiting = torch.cat([waiting, walking])
            # Each sample's walk is its own: while others still walk, the attack waits
            # for full batches (a small batch costs about as much per step as a full one).
            full = len(waiting) // self.batch_size * self.batch_size
            ready = full if len(broke) else len(waiting)
            if ready:
                samples, waiting = waiting[:ready], waiting[ready:]
                self.attack_cold(samples, attack, options, progress)
                hit = self.reached_level[samples] == self.level[samples]
                self.lo[samples[~hit]] = self.level[samples[~hit]]
                broke = torch.cat([broke, samples[hit]])
            # Down through the projected points, all that broke together.
            walking = self.walk_down(broke)
        self.finish_descend(options["norm"], progress)

    def walk_down(self, samples: torch.Tensor) -> torch.Tensor:
        """The samples that just broke at their level, moved down through their projected
        points: those with a level left to try, at the level below their breaking one."""
        self.project_down(samples)
        samples = samples[self.reached_level[samples] - self.lo[samples] > 1]
        self.level[samples] = self.reached_level[samples] - 1
        return samples

    def finish_descend(self, norm: str, progress: Callable[[int, int, int], None] | None) -> None:
        """The curve, checks and breaking budgets from the levels the walk found."""
        checks = []
        for i, eps in enumerate(self.epsilons):
            check = self.level_checks[i]
            if progress is not None and not check.attacked:
                progress(i, 0, 0)
            if eps == 0:
                checks.append({**self.clean_check, **_NOTHING})
                continue
            forward, backward = (round(v) for v in self.spent[i])
            merged = {"stages": _merge(self.stages[i], whole=True)} if self.stages[i] else {}
            spent = {"forward": forward, "backward": backward}
            checks.append({**check.result(eps, norm), **spent, **merged})
        self.checks = checks
        for i in range(len(self.epsilons)):
            self.accuracy.append(int((self.fooled_level > i).sum()) / self.n)
            self.success_rate.append(int((self.reached_level <= i).sum()) / self.n)
        grid = torch.tensor([*self.epsilons, math.nan], dtype=torch.float64)
        self.fooled_at, self.reached_at = grid[self.fooled_level], grid[self.reached_level]

    def project_down(self, samples: torch.Tensor) -> None:
        """Walk the samples that just broke down through their projected points (one
        forward pass per level, while it still succeeds, above the level known robust)."""
        while len(samples):
            below = self.reached_level[samples] - 1
            keep = below > self.lo[samples]
            samples, below = samples[keep], below[keep]
            if len(samples):  # models need not take an empty batch
                samples = samples[self.try_projected(samples, below)]

    def try_projected(self, samples: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Check each sample's last adversarial point projected onto its eps-ball at `level`
        (one forward pass); record the successes and return whether each reached."""
        reached = []
        for batch, at in zip(
            samples.split(self.batch_size), level.split(self.batch_size), strict=True
        ):
            x_batch = self.inputs(batch)
            budget = self.grid[at].to(device=self.device, dtype=x_batch.dtype)
            ball = norms.ball(x_batch, budget, self.norm, None)  # a shrunk point stays in the box
            candidate = ball.project(self.points[batch].to(self.device))
            before = self.passes.forward, self.passes.backward
            hit = self.record(batch, at, x_batch, candidate, None)
            self.share(at, before)
            reached.append(hit)
        return torch.cat(reached) if reached else torch.zeros(0, dtype=torch.bool)

    def share(self, level: torch.Tensor, before: tuple[int, int]) -> None:
        """Attribute the passes spent since the count was `before` (forward, backward) to the
        levels of a call's samples, in proportion to their number."""
        spent = self.passes.forward - before[0], self.passes.backward - before[1]
        counts = torch.bincount(level, minlength=len(self.epsilons)).tolist()
        for i, count in enumerate(counts):
            if count:
                for kind in range(2):
                    self.spent[i][kind] += count / len(level) * spent[kind]

    def probe(self, samples: torch.Tensor, attack: str, options: dict[str, Any]) -> None:
        """`WARM_STEPS` steps from each sample's last point projected onto its own level."""
        probe = {**options, "steps": WARM_STEPS}
        probe.update({"restarts": 1} if takes(attack, "restarts") else {})
        for batch in samples.split(self.batch_size):
            self.attack_levels(batch, self.level[batch], attack, probe, warm=True)

    def attack_cold(
        self,
        samples: torch.Tensor,
        attack: str,
        options: dict[str, Any],
        progress: Callable[[int, int, int], None] | None,
    ) -> None:
        """The attack itself on each sample at its own level, all levels in the same calls,
        from the clean input (with that level's seeds)."""
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            self.attack_levels(batch, self.level[batch], attack, options)
            if progress is not None:
                progress(int(self.level[batch].max()), start + len(batch), len(samples))

    def attack_levels(
        self,
        batch: torch.Tensor,
        at: torch.Tensor,
        attack: str,
        options: dict[str, Any],
        warm: bool = False,
    ) -> None:
        """One attack call: each sample of `batch` at the eps of its level `at` (started
        from its last point when `warm`)."""
        stages: list[dict[str, Any]] = []
        if takes(attack, "log"):
            options = {**options, "log": stages}
        if warm:
            options = {**options, "start": self.points[batch].to(self.device)}
        before = self.passes.forward, self.passes.backward
        x_batch, x_adv = self.run_attack(batch, at, attack, options)
        self.record(batch, at, x_batch, x_adv, self.level_checks)
        self.share(at, before)
        counts = torch.bincount(at, minlength=len(self.epsilons)).tolist()
        for i, count in enumerate(counts):  # a staged attack's log, shared out the same way
            share = count / len(at)
            self.stages[i] += [
                {k: v if k == "stage" else v * share for k, v in entry.items()}
                for entry in stages
                if count
            ]

    def record(
        self,
        batch: torch.Tensor,
        level: torch.Tensor,
        x_batch: torch.Tensor,
        x_adv: torch.Tensor,
        checks: list[_Check] | None,
    ) -> torch.Tensor:
        """Note where `x_adv` (valid at each sample's `level`) fools / reaches; return
        whether each reached. `checks` (per level) get the points, when given."""
        prediction = self.predict(x_adv)
        reached = self.succeeded(prediction, batch)
        # Untargeted, fooling is reaching: the rows are found once.
        fooled = reached if self.targets is None else prediction != self.y[batch]
        rows, at = batch[fooled], level[fooled]
        self.fooled_level[rows] = torch.minimum(self.fooled_level[rows], at)
        if fooled is not reached:
            rows, at = batch[reached], level[reached]
        self.reached_level[rows] = at
        self.points[rows] = x_adv[reached.to(x_adv.device)].cpu()
        if checks is not None:
            _Check.add_levels(checks, level, x_adv - x_batch, x_adv, self.norm)
        if self.examples is not None:
            top = len(self.epsilons) - 1
            kept = (batch < len(self.examples["x"])) & (reached | (level == top))
            self.examples["x_adv"][batch[kept], level[kept]] = x_adv[kept.to(x_adv.device)].cpu()
        return reached

    def seeds(self) -> torch.Tensor:
        """Per-sample seeds `(eps, n)` of the attack at each eps index `i`: from (seed, i, index
        in x), all drawn together when first needed."""
        if self._seeds is None:
            streams = [("curve", self.seed, "eps", i) for i in range(len(self.epsilons))]
            self._seeds = self.noise.forks(streams)
        return self._seeds

    def run_attack(
        self, batch: torch.Tensor, i: int | torch.Tensor, attack: str, options: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attack at eps index `i` (one, or one per sample) on the samples `batch`:
        clean inputs and adversarial ones."""
        x_batch = self.inputs(batch)
        t_batch = None if self.targets is None else self.targets[batch].to(self.device)
        y_batch = self.y[batch].to(self.device)
        at = torch.full_like(batch, i) if isinstance(i, int) else i
        seeds = self.seeds()[at, batch]
        if takes(attack, "seeds"):
            options = {**options, "seeds": seeds.to(self.device)}
        elif takes(attack, "generator"):  # an attack without per-sample seeds
            seed = int(seeds[0]) if len(batch) else 0
            options = {**options, "generator": torch.Generator(self.device).manual_seed(seed)}
        eps: float | torch.Tensor = self.epsilons[i] if isinstance(i, int) else self.grid[at]
        x_adv = attacks.ATTACKS[attack](
            self.model, x_batch, y_batch, eps, target=t_batch, **options
        )
        return x_batch, x_adv

    def predict(self, x_adv: torch.Tensor) -> torch.Tensor:
        """The model's predicted classes at `x_adv`, on the CPU."""
        with torch.no_grad(), attacks.eval_mode(self.model):
            return attacks.logits_of(self.model(x_adv)).argmax(dim=1).cpu()

    def attack_batch(
        self, batch: torch.Tensor, i: int, attack: str, options: dict[str, Any], check: _Check
    ) -> None:
        x_batch, x_adv = self.run_attack(batch, i, attack, options)
        prediction = self.predict(x_adv)
        self.fooled[batch] |= prediction != self.y[batch]
        self.reached[batch] |= self.succeeded(prediction, batch)
        check.add(x_adv - x_batch, x_adv, options["norm"])
        if self.examples is not None:
            kept = batch < len(self.examples["x"])
            self.examples["current"][batch[kept]] = x_adv[kept.to(x_adv.device)].cpu()


def _merge(stages: list[dict[str, Any]], whole: bool = False) -> list[dict[str, Any]]:
    """Sum the per-batch logs of a staged attack into one entry per stage, in order
    (`whole`: rounded to whole numbers, for logs shared out over several eps)."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in stages:
        into = merged.setdefault(entry["stage"], {"stage": entry["stage"]})
        for key, value in entry.items():
            if key != "stage":
                into[key] = into.get(key, 0) + value
    if whole:
        for into in merged.values():
            into.update({k: round(v) for k, v in into.items() if k != "stage"})
    return list(merged.values())


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arguments(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    attack: str,
    norm: str,
    target: None | str | int,
    batch_size: int,
    seed: int,
    attack_kw: dict[str, Any],
) -> list[float]:
    """Raise `ValueError` naming the first bad argument; return the epsilons as floats."""
    _check_tensors(x, y)
    values = _check_epsilons(epsilons, x, attack_kw)
    options = attack_options(attack)
    if norm not in norms.NORMS:
        raise ValueError(f"norm must be one of {norms.NORMS}, got {norm!r}")
    if not (target is None or target in TARGETS or (_is_int(target) and 0 <= target < 2**63)):
        raise ValueError(
            f"target must be None, a class index >= 0 or one of {TARGETS}, got {target!r}"
        )
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not _is_int(seed) or not -(2**63) <= seed < 2**64:  # what torch.Generator takes
        raise ValueError(f"seed must be an int in [-2**63, 2**64), got {seed!r}")
    if "generator" in attack_kw:
        raise ValueError("generator is not accepted in attack_kw: it is drawn from seed")
    unknown = sorted(set(attack_kw) - set(options))
    if unknown:
        raise ValueError(f"attack_kw has options that {attack} does not take: {unknown}")
    # Checked here, not only by the attack, because eps 0 (and samples the curve
    # never attacks) would otherwise turn NaN or out-of-range inputs into numbers.
    check_clip(attack_kw.get("clip", options.get("clip", (0.0, 1.0))), x)
    return values


def _check_tensors(x: object, y: object) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or not len(x):
        shown = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float tensor of shape (N, ...) with N >= 1, got {shown}")
    if (
        not isinstance(y, torch.Tensor)
        or y.is_floating_point()
        or y.dtype == torch.bool
        or tuple(y.shape) != (len(x),)
    ):
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor of shape ({len(x)},), got {got}")


def _check_epsilons(
    epsilons: Sequence[float], x: torch.Tensor, attack_kw: dict[str, Any]
) -> list[float]:
    try:
        values = [float(eps) for eps in epsilons]
    except (TypeError, ValueError):
        raise ValueError(f"epsilons must be a sequence of numbers, got {epsilons!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"epsilons must be finite numbers >= 0, at least one, got {values}")
    if values != sorted(values):
        raise ValueError(f"epsilons must be in increasing order, got {values}")
    # Larger budgets or steps overflow the squared L2 norms in x's dtype, and the
    # attack then silently drops its step (or makes NaNs); any budget beyond the
    # diameter of the clip box acts the same anyway.
    largest = math.sqrt(torch.finfo(x.dtype).max) / 8
    if values[-1] > largest:
        raise ValueError(
            f"epsilons must be at most {largest:.3g} for {x.dtype} inputs, got {values}"
        )
    step_size = attack_kw.get("step_size")
    if isinstance(step_size, (int, float)) and step_size > largest:
        raise ValueError(
            f"step_size must be at most {largest:.3g} for {x.dtype} inputs, got {step_size!r}"
        )
    return values


def _clean_pass(
    model: nn.Module, x: torch.Tensor, index: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Clean logits `(n, K)` on the CPU for `x[index]`, and the eps-0 checks."""
    logits = []
    check = _Check()
    with torch.no_grad(), attacks.eval_mode(model):
        for start in range(0, len(index), batch_size):
            x_batch = x[index[start : start + batch_size].to(x.device)].to(device)
            out = attacks.logits_of(model(x_batch))
            if not start:
                if out.ndim != 2 or out.shape[0] != len(x_batch) or out.shape[1] < 2:
                    raise ValueError(
                        "model must map x to logits of shape (N, K) with K >= 2, "
                        f"got {tuple(out.shape)} for N={len(x_batch)}"
                    )
            logits.append(out.float().cpu())
            check.add(torch.zeros_like(x_batch), x_batch, "linf")
    # Eps 0 attacks nothing; the checks describe the clean inputs.
    return torch.cat(logits), {**check.result(0.0, "linf"), "attacked": 0}


def _targets(
    target: None | str | int, y: torch.Tensor, clean_logits: torch.Tensor, noise: Noise
) -> torch.Tensor | None:
    """The target class of each sample, or None for an untargeted attack.

    Random targets come from each sample's own stream in `noise`.
    """
    k = clean_logits.shape[1]
    if int(y.max()) >= k:
        raise ValueError(
            f"y must hold class indices < K={k} (the model's outputs), got {int(y.max())}"
        )
    if target is None:
        return None
    if target == "random":
        # An offset in 1..K-1 gives each wrong class the same chance.
        return (y + noise.integers(1, k - 1, "target").cpu()) % k
    if target == "least-likely":
        return clean_logits.scatter(1, y[:, None], float("inf")).argmin(dim=1)
    if int(target) >= k:
        raise ValueError(f"target must be a class index < K={k}, got {target!r}")
    return torch.full_like(y, int(target))


def _settings(
    attack: str,
    norm: str,
    target: None | str | int,
    seed: int,
    batch_size: int,
    method: str,
    attack_kw: dict[str, Any],
) -> dict[str, Any]:
    """Every setting of the run, defaults filled in, as JSON-ready values."""
    settings = {"attack": attack, "norm": norm, "target": target}
    settings.update(attack_options(attack), **attack_kw)
    incremental = method != "scratch"
    settings.update(seed=seed, batch_size=batch_size, incremental=incremental, method=method)
    return {name: _json_ready(value) for name, value in settings.items()}


def _json_ready(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value


class _Check:
    """Running self-checks of the adversarial inputs at one eps."""

    def __init__(self) -> None:
        self.attacked = 0
        self.max_norm = 0.0
        self.nan_count = 0
        self.min: float | None = None
        self.max: float | None = None

    def add(self, delta: torch.Tensor, x_adv: torch.Tensor, norm: str) -> None:
        if not len(x_adv):
            return
        # In float64: a float16 result is checked against its budget exactly.
        largest = norms.norm_of(delta.double(), norm).max().item()
        nans = int(torch.isnan(x_adv).sum())
        self.merge(len(x_adv), largest, nans, x_adv.min().item(), x_adv.max().item())

    def merge(self, attacked: int, largest: float, nans: int, low: float, high: float) -> None:
        """Take in the checks of `attacked` more points."""
        self.attacked += attacked
        self.max_norm = max(self.max_norm, largest)
        self.nan_count += nans
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)

    @staticmethod
    def add_levels(
        checks: list[_Check],
        level: torch.Tensor,
        delta: torch.Tensor,
        x_adv: torch.Tensor,
        norm: str,
    ) -> None:
        """`add` the points of each level to its checks, all levels in a few passes."""
        flat = x_adv.flatten(1)
        low, high = flat.aminmax(dim=1)
        per_sample = torch.stack(  # (N, 4): largest norm, NaNs, min, max
            [
                norms.norm_of(delta.double(), norm),
                torch.isnan(flat).sum(1).double(),
                low.double(),
                high.double(),
            ],
            dim=1,
        ).cpu()
        for i in level.unique().tolist():
            rows = per_sample[level == i]
            largest, nans, low_, high_ = torch.stack(
                [rows[:, 0].max(), rows[:, 1].sum(), rows[:, 2].min(), rows[:, 3].max()]
            ).tolist()
            checks[i].merge(len(rows), largest, int(nans), low_, high_)

    def result(self, eps: float, norm: str) -> dict[str, Any]:
        """The checks as a dict; warns when the attack broke its budget or made NaNs."""
        if self.max_norm > eps + NORM_TOLERANCE or self.nan_count:
            warnings.warn(
                f"attack broke its contract at eps={eps}: largest {norm} perturbation "
                f"{self.max_norm}, {self.nan_count} NaN values",
                RuntimeWarning,
                stacklevel=3,
            )
        return {
            "eps": eps,
            "attacked": self.attacked,
            # None when nothing was attacked: no perturbation was measured.
            "max_norm": self.max_norm if self.attacked else None,
            "nan_count": self.nan_count,
            "min": self.min,
            "max": self.max,
        }
