"""The strong evaluation: a sequence of attacks, each only on the samples that survive.

AutoAttack's insight (Croce & Hein 2020, https://arxiv.org/abs/2003.01690) is
that APGD with cross-entropy, then targeted APGD on the classes nearest the
decision boundary, then a gradient-free attack, together leave far fewer
robust samples than any one attack. Most of its cost goes to samples already
broken or to targets that never succeed; like the adaptive variants (A3,
https://arxiv.org/abs/2203.05948; MM, https://arxiv.org/abs/2210.14496), this
sequence ranks target classes by the clean logits and spends each stage only
on the survivors of the previous ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from attacks import checks, losses
from attacks.apgd import apgd
from attacks.noise import Noise
from attacks.runtime import count_passes, eval_mode
from attacks.square import square

# The options a preset sets, in the order of STRENGTHS' tuples.
PRESET_OPTIONS = (
    "steps", "targets", "targeted_steps", "rounds", "round_targets", "round_steps", "queries"
)  # fmt: skip
# Chosen by measurement against AutoAttack (scripts/bench/strong.py, BENCHMARKS.md).
STRENGTHS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "fast": (100, 3, 25, 1, 1, 100, 0),
    "default": (100, 9, 25, 3, 1, 100, 0),
    "thorough": (100, 9, 50, 4, 2, 200, 1000),
}

# A survivor is near success when the targeted DLR loss reached -NEAR or more: the
# target's logit came within a tenth of the logit spread of the true class's.
NEAR = 0.1


def strong(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    target: torch.Tensor | None = None,
    loss: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    strength: str = "default",
    steps: int | None = None,
    targets: int | None = None,
    targeted_steps: int | None = None,
    rounds: int | None = None,
    round_targets: int | None = None,
    round_steps: int | None = None,
    queries: int | None = None,
    log: list[dict] | None = None,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """APGD-CE, then targeted APGD on the top classes, then Square; per sample, the first success.

    Untargeted (the default): APGD with `loss` (cross-entropy) for `steps`;
    then, on the samples still classified correctly, APGD with the targeted
    DLR loss toward each of the `targets` wrong classes with the highest
    clean logits, `targeted_steps` each, from a random start; the target only
    steers the loss, and any misclassification counts (AutoAttack's APGD-T
    rule). `rounds - 1` more rounds follow, each from fresh random starts
    with `round_steps` steps, but only on the survivors that came near
    success (targeted DLR >= -`NEAR`), toward the `round_targets` classes
    each came nearest to: restarts go where they can still pay off, as in
    A3 (https://arxiv.org/abs/2203.05948). Then, if `queries > 0`, Square
    with that many queries on whatever survives every gradient attack.
    Every stage runs only on the samples that survive the stages before it.
    Targeted (`target` given): APGD toward the target with `loss`, then
    `rounds` runs with the targeted DLR loss (if `targets > 0`), then Square.

    `strength` picks the preset (`STRENGTHS`: `"fast"`, `"default"`,
    `"thorough"`); an option given explicitly overrides the preset's value.

    Args:
        model: Maps `x` to logits `(N, K)`.
        x: Clean inputs, inside `clip`.
        y: True labels.
        eps: Budget, a number or a per-sample `(N,)` tensor.
        norm: `"linf"` or `"l2"`.
        target: None (untargeted) or the class each sample should become.
        loss: The first stage's loss (`"ce"` by default).
        clip: Valid input range, or None.
        generator: Used only without `seeds`: one seed per batch position is
            drawn from it (None: a fresh generator seeded with 0).
        strength: The preset the options below default to.
        steps: APGD steps of the first stage.
        targets: Target classes of the first targeted round (0 skips the targeted stage).
        targeted_steps: APGD steps per target class in the first targeted round.
        rounds: Rounds of the targeted stage, >= 1, each from fresh random starts.
        round_targets: Per near sample, the target classes of each later round.
        round_steps: APGD steps per target class in each later round.
        queries: Square's query budget on the survivors (0 skips it).
        log: If a list, one dict per stage is appended: `stage`, `attacked`
            (samples), `fooled` (of those), `forward` and `backward` passes.
        seeds: Per-sample seeds `(N,)` (int64). Each stage gets seeds forked
            from each sample's own (`attacks.noise.Noise.fork("stage", name)`),
            so a sample's result does not depend on the batch it is in.

    Returns:
        The adversarial inputs, detached, with `x`'s shape, dtype and device.

    Shape:
        x `(N, ...)`, y `(N,)`, target `(N,)` -> `(N, ...)`.
    """
    p = checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    plan = _Plan.make(
        strength, steps, targets, targeted_steps, rounds, round_targets, round_steps, queries
    )
    if not p.eps.any():
        return p.original.clone()
    noise = Noise.of(p.x, seeds=seeds, generator=generator)
    best = p.original.clone()
    fooled = torch.zeros(len(best), dtype=torch.bool, device=best.device)
    common = {"norm": norm, "clip": clip}
    aims = _Aims(model, p)
    for stage, attack, options in plan.stages(p):
        todo = (~fooled).nonzero().squeeze(1)
        if not len(todo):
            break
        options = dict(options)
        aim = options.pop("aim", None)
        with count_passes(model) as passes:
            todo, stage_target = aims.choose(aim, todo)
            if not len(todo):
                continue  # no such target class, or no survivor near success
            point = attack(
                model, p.original[todo], p.y[todo], p.eps[todo], target=stage_target,
                seeds=noise.fork("stage", stage).seeds[todo], **common, **options,
            )  # fmt: skip
            hit = aims.judge(aim, todo, point)
        # The first stage's points stand for samples nothing fools; later stages
        # replace them only where they succeed.
        keep = torch.ones_like(hit) if stage == f"apgd-{p.loss}" else hit
        best[todo[keep]], fooled[todo[hit]] = point[keep], True
        if log is not None:
            log.append(
                {"stage": stage, "attacked": len(todo), "fooled": int(hit.sum()),
                 "forward": passes.forward, "backward": passes.backward}
            )  # fmt: skip
    return best


class _Plan:
    """The checked sizes of one strong run, and its sequence of stages."""

    COUNTS = ("steps", "targeted_steps", "rounds", "round_steps")  # ints >= 1; the others >= 0

    def __init__(self, **sizes: int) -> None:
        self.steps, self.targets = sizes["steps"], sizes["targets"]
        self.targeted_steps, self.rounds = sizes["targeted_steps"], sizes["rounds"]
        self.round_targets, self.round_steps = sizes["round_targets"], sizes["round_steps"]
        self.queries = sizes["queries"]

    @classmethod
    def make(cls, strength: str, *given: int | None) -> _Plan:
        """The preset `strength` with the options given explicitly put in; checked."""
        checks.check_choice("strength", strength, tuple(STRENGTHS))
        sizes = {
            name: preset if value is None else value
            for name, value, preset in zip(PRESET_OPTIONS, given, STRENGTHS[strength], strict=True)
        }
        for name, value in sizes.items():
            if name in cls.COUNTS:
                checks.check_count(name, value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        return cls(**sizes)  # type: ignore[arg-type]

    def stages(self, p: checks.Problem) -> list[tuple[str, Callable[..., torch.Tensor], dict]]:
        """The sequence of (name, attack, options); `aim` says where each stage's target comes from."""
        first = {"steps": self.steps, "loss": p.loss, "early_stop": True}
        stages: list[tuple[str, Callable[..., torch.Tensor], dict]] = [
            (f"apgd-{p.loss}", apgd, first)
        ]
        targeted = {"steps": self.targeted_steps, "loss": "dlr", "early_stop": True}
        later = {**targeted, "steps": self.round_steps}
        for r in range(self.rounds if self.targets else 0):
            again = "" if r == 0 else f"-round{r + 1}"
            if p.target is not None:
                stages.append((f"apgd-dlr-targeted{again}", apgd, targeted if r == 0 else later))
                continue
            # The target steers the loss; any misclassification is a success.
            if r == 0:
                stages += [
                    (f"apgd-dlr-top{rank + 1}", apgd, {**targeted, "misclassify": True,
                                                       "aim": ("rank", rank)})
                    for rank in range(self.targets)
                ]  # fmt: skip
            else:
                stages += [
                    (f"apgd-dlr-near{j + 1}{again}", apgd, {**later, "misclassify": True,
                                                            "aim": ("near", j)})
                    for j in range(self.round_targets)
                ]  # fmt: skip
        if self.queries:
            stages.append(("square", square, {"queries": self.queries, "loss": "margin"}))
        return stages


class _Aims:
    """Where the targeted stages aim, and how near each (sample, target) came to success.

    `("rank", r)`: every survivor, toward its wrong class of clean-logit rank
    `r`. `("near", j)`: only the survivors whose `j`-th best targeted DLR so
    far is >= -`NEAR`, toward that class. None: the caller's target (or none).
    """

    def __init__(self, model: nn.Module, p: checks.Problem) -> None:
        self.model, self.p = model, p
        self.ranked: torch.Tensor | None = None  # (N, K-1): wrong classes by clean logit
        self.reached: torch.Tensor | None = None  # (N, K-1): best targeted DLR per rank

    def choose(
        self, aim: tuple[str, int] | None, todo: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The samples a stage attacks (of `todo`) and their targets."""
        if aim is None:
            return todo, None if self.p.target is None else self.p.target[todo]
        if self.ranked is None:
            self.ranked = _wrong_classes(self.model, self.p, todo)
            self.reached = torch.full(self.ranked.shape, -math.inf, device=self.ranked.device)
        kind, k = aim
        if k >= self.ranked.shape[1]:
            return todo[:0], None  # fewer wrong classes than targets
        if kind == "rank":
            return todo, self.ranked[todo, k]
        assert self.reached is not None
        value, rank = self.reached[todo].sort(dim=1, descending=True)
        near = value[:, k] >= -NEAR
        return todo[near], self.ranked[todo[near], rank[near, k]]

    def judge(
        self, aim: tuple[str, int] | None, todo: torch.Tensor, point: torch.Tensor
    ) -> torch.Tensor:
        """Which samples `point` fools; for a first-round rank, how near the rest came."""
        some = self.p.select(todo)
        with torch.no_grad(), eval_mode(self.model):
            logits = some.logits(self.model, point.to(some.x.dtype), check=True)
        if aim is not None and aim[0] == "rank" and self.reached is not None:
            target = self.ranked[todo, aim[1]]  # type: ignore[index]
            value = losses.objective(logits, some.y, target, "dlr").to(self.reached.dtype)
            self.reached[todo, aim[1]] = torch.maximum(self.reached[todo, aim[1]], value)
        return losses.succeeded(logits, some.y, some.target)


def _wrong_classes(model: nn.Module, p: checks.Problem, rows: torch.Tensor) -> torch.Tensor:
    """`(N, K-1)`: for the samples `rows`, the classes other than `y` by decreasing clean logit."""
    some = p.select(rows)
    with torch.no_grad(), eval_mode(model):
        logits = some.logits(model, some.x, check=True)
    ranked = logits.scatter(1, p.y[rows, None], float("-inf")).argsort(dim=1, descending=True)
    out = torch.zeros((len(p.y), logits.shape[1]), dtype=torch.int64, device=logits.device)
    out[rows] = ranked
    return out[:, :-1]
