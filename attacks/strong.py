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

from collections.abc import Callable

import torch
from torch import nn

from attacks import checks, losses
from attacks.apgd import apgd
from attacks.noise import Noise
from attacks.runtime import count_passes, eval_mode
from attacks.square import square


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
    steps: int = 100,
    targets: int = 3,
    targeted_steps: int = 50,
    queries: int = 0,
    log: list[dict] | None = None,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """APGD-CE, then targeted APGD on the top classes, then Square; per sample, the first success.

    Untargeted (the default): APGD with `loss` (cross-entropy) for `steps`;
    then, on the samples still classified correctly, APGD targeted with the
    DLR loss at each of the `targets` classes with the highest clean logits
    (other than the true one), `targeted_steps` each; then, if `queries > 0`,
    Square with that many queries on whatever survives every gradient attack.
    Targeted (`target` given): APGD toward the target with `loss`, then with
    the targeted DLR loss, then Square. Each stage starts from the clean
    input and runs only on the survivors of the stages before it.

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
        steps: APGD steps of the first stage.
        targets: Target classes tried by the targeted stage (0 skips it).
        targeted_steps: APGD steps per target class.
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
    checks.check_count("steps", steps)
    checks.check_count("targeted_steps", targeted_steps)
    if isinstance(targets, bool) or not isinstance(targets, int) or targets < 0:
        raise ValueError(f"targets must be an int >= 0, got {targets!r}")
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 0:
        raise ValueError(f"queries must be an int >= 0, got {queries!r}")
    if not p.eps.any():
        return p.original.clone()
    noise = Noise.of(p.x, seeds=seeds, generator=generator)
    best = p.original.clone()
    fooled = torch.zeros(len(best), dtype=torch.bool, device=best.device)
    common = {"norm": norm, "clip": clip}
    first = f"apgd-{p.loss}"
    for stage, attack, options in _stages(model, p, steps, targets, targeted_steps, queries):
        todo = (~fooled).nonzero().squeeze(1)
        if not len(todo):
            break
        options = dict(options)
        stage_target = options.pop("target", p.target)  # (N,): the samples' own targets
        stage_target = None if stage_target is None else stage_target[todo]
        with count_passes(model) as passes:
            point = attack(
                model, p.original[todo], p.y[todo], p.eps[todo],
                target=stage_target, seeds=noise.fork("stage", stage).seeds[todo],
                **common, **options,
            )  # fmt: skip
            hit = _succeeded(model, p.select(todo), point)
        # The first stage's points stand for samples nothing fools; later stages
        # replace them only where they succeed.
        keep = torch.ones_like(hit) if stage == first else hit
        best[todo[keep]], fooled[todo[hit]] = point[keep], True
        if log is not None:
            log.append(
                {"stage": stage, "attacked": len(todo), "fooled": int(hit.sum()),
                 "forward": passes.forward, "backward": passes.backward}
            )  # fmt: skip
    return best


def _stages(
    model: nn.Module,
    p: checks.Problem,
    steps: int,
    targets: int,
    targeted_steps: int,
    queries: int,
) -> list[tuple[str, Callable[..., torch.Tensor], dict]]:
    """The sequence of (name, attack, options) for these settings."""
    first = {"steps": steps, "loss": p.loss, "early_stop": True}
    stages: list[tuple[str, Callable[..., torch.Tensor], dict]] = [(f"apgd-{p.loss}", apgd, first)]
    targeted = {"steps": targeted_steps, "loss": "dlr", "early_stop": True}
    if p.target is not None:
        if targets:
            stages.append(("apgd-dlr-targeted", apgd, targeted))
    else:
        for rank, target in enumerate(_top_classes(model, p, targets)):
            stages.append((f"apgd-dlr-top{rank + 1}", apgd, {**targeted, "target": target}))
    if queries:
        stages.append(("square", square, {"queries": queries, "loss": "margin"}))
    return stages


def _top_classes(model: nn.Module, p: checks.Problem, k: int) -> list[torch.Tensor]:
    """Per rank, each sample's `rank`-th most likely wrong class by the clean logits."""
    with torch.no_grad(), eval_mode(model):
        logits = p.logits(model, p.x, check=True)
    k = min(k, logits.shape[1] - 1)
    ranked = logits.scatter(1, p.y[:, None], float("-inf")).argsort(dim=1, descending=True)
    return [ranked[:, rank] for rank in range(k)]


def _succeeded(model: nn.Module, p: checks.Problem, point: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return losses.succeeded(p.logits(model, point.to(p.x.dtype), check=True), p.y, p.target)
