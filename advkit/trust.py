"""Can this evaluation be trusted? Intervals and plain-language warning flags.

Every accuracy rests on a finite sample: `wilson` gives its 95% interval. The
flags catch the usual ways an evaluation looks robust without being robust
(Carlini et al. 2019, https://arxiv.org/abs/1902.06705; Croce & Hein 2020):
masked or vanishing gradients, probability outputs, randomness, a curve that
does not fall at budgets that should destroy any classifier, a one-step
attack beating an iterative one, a gradient-free attack finding what the
gradient attacks missed. A flag is `{"code": ..., "message": ...}`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import attacks

# z for a two-sided 95% interval.
Z95 = 1.959963984540054

# Share of samples with an exactly-zero input gradient that counts as masking.
ZERO_GRADIENT_SHARE = 0.05


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at
    0 and n (https://doi.org/10.1080/01621459.1927.10502953).
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def model_flags(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None
) -> list[dict[str, str]]:
    """Flags about the model itself, from one batch: outputs, randomness, gradients.

    `logits`: the model's eval-mode output on `x` if the caller has it already
    (a curve's clean pass), so only the second pass the randomness check needs
    is made.
    """
    flags = []
    with torch.no_grad(), attacks.eval_mode(model):
        if logits is None:
            logits = attacks.logits_of(model(x)).float()
        again = attacks.logits_of(model(x)).float()
        logits = logits.to(again)
    if bool(((logits >= 0) & (logits <= 1)).all()) and torch.allclose(
        logits.sum(dim=1), torch.ones_like(logits[:, 0]), atol=1e-3
    ):
        flags.append(
            flag(
                "probabilities",
                "the model outputs look like probabilities (rows in [0, 1] summing to 1), not "
                "logits: gradients through a softmax vanish and attacks look weaker than they are",
            )
        )
    if not torch.allclose(again, logits, rtol=1e-4, atol=1e-5):
        flags.append(flag("stochastic", _stochastic_message(model)))
    share = zero_gradient_share(model, x, y)
    if share >= ZERO_GRADIENT_SHARE:
        flags.append(
            flag(
                "zero-gradients",
                f"{share:.0%} of the samples have an exactly-zero input gradient: gradient "
                "attacks cannot move them (masked gradients); try a gradient-free attack",
            )
        )
    return flags


def _stochastic_message(model: nn.Module) -> str:
    """What the randomness flag says; an EOT wrapper (`advkit.defenses`) names its draws."""
    adaptive = getattr(model, "adaptive", None)
    if isinstance(adaptive, str) and adaptive.startswith("eot:"):
        return (
            "two eval-mode passes on the same inputs differ: the attack averaged its gradients "
            f"over {adaptive.partition(':')[2]} draws of the randomness (EOT), and each "
            "prediction is judged on one fresh draw"
        )
    return (
        "two eval-mode passes on the same inputs differ: a randomized model needs an "
        "attack that averages over its randomness (EOT) before its numbers mean anything"
    )


def zero_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of samples whose cross-entropy gradient with respect to the input is all zero."""
    with attacks.attack_mode(model), torch.enable_grad():
        point = x.detach().clone().requires_grad_(True)
        logits = attacks.logits_of(model(point)).float()
        loss = nn.functional.cross_entropy(logits, y.to(logits.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, point, allow_unused=True)
    if grad is None:
        return 1.0
    return float((grad.flatten(1).abs().amax(dim=1) == 0).float().mean())


# A flat tail is judged on this many budgets > 0 at the end of the grid.
TAIL = 3


def large_budget(norm: str, clip: Any) -> float | None:
    """The budget that should break anything: half the pixel range per pixel (L-inf)
    lets an attacker paint any mid-grey image; None for L2 (no such budget is checked)."""
    width = 1.0 if clip is None else float(clip[1]) - float(clip[0])
    return 0.5 * width if norm == "linf" else None


def unchecked_shapes(epsilons: Sequence[float], norm: str, clip: Any) -> dict[str, str]:
    """The checks of `curve_flags` this grid is too short for: flag code -> what, in words."""
    missing = {}
    if sum(e > 0 for e in epsilons) < TAIL:
        missing["flat-tail"] = f"a flat tail (needs {TAIL} budgets > 0)"
    large = large_budget(norm, clip)
    if large is not None and epsilons[-1] < large:
        missing["no-fall"] = f"the fall towards 0 at eps {large:g}"
    return missing


def curve_flags(
    epsilons: Sequence[float], accuracy: Sequence[float], norm: str, clip: Any
) -> list[dict[str, str]]:
    """Flags from a curve's shape: no fall at a budget that should break anything, a flat tail."""
    flags = []
    large = large_budget(norm, clip)
    if large is not None and epsilons[-1] >= large and accuracy[-1] > 0.05:
        flags.append(
            flag(
                "no-fall",
                f"accuracy is still {accuracy[-1]:.0%} at eps {epsilons[-1]:g}, a budget that "
                "lets the attacker replace the image: the attack is failing, not the model "
                "succeeding",
            )
        )
    attacked = [(e, a) for e, a in zip(epsilons, accuracy, strict=True) if e > 0]
    if len(attacked) >= TAIL and attacked[-1][1] > 0.05:
        tail = [a for _, a in attacked[-TAIL:]]
        if max(tail) - min(tail) == 0 and tail[0] < accuracy[0]:
            flags.append(
                flag(
                    "flat-tail",
                    f"accuracy stays at {tail[-1]:.0%} from eps {attacked[-TAIL][0]:g} to "
                    f"{attacked[-1][0]:g}: a curve that stops falling often means the attack "
                    "stopped finding anything (masked gradients, too few steps)",
                )
            )
    return flags


def compare_flags(
    curves: dict[str, tuple[list[float], list[float]]], iterative: dict[str, bool]
) -> list[dict[str, str]]:
    """Flags across attacks on one model and setting: a one-shot attack beating an iterative one.

    Args:
        curves: attack name -> (epsilons, share of samples the attack failed on:
            the accuracy when untargeted, 1 - success rate when targeted), all
            with the same norm and target mode.
        iterative: attack name -> whether it iterates (takes `steps` or `queries`).
    """
    flags = []
    for shot, (shot_eps, shot_acc) in curves.items():
        if iterative[shot]:
            continue
        one_shot = dict(zip(shot_eps, shot_acc, strict=True))
        for name, (eps, acc) in curves.items():
            pairs = zip(eps, acc, strict=True)
            worse = [
                e for e, a in pairs if iterative[name] and e in one_shot and one_shot[e] < a - 0.01
            ]
            if worse:
                flags.append(
                    flag(
                        "one-step-stronger",
                        f"{shot} (one step) succeeds on more samples than {name} at eps {worse[0]:g}: "
                        "the iterative attack is being misled (masked gradients, bad step size)",
                    )
                )
    return flags
