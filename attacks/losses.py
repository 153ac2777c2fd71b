"""Attack objectives: per-sample losses that an attack pushes up.

Every objective is written so that larger is better for the attacker, for
targeted and untargeted attacks alike; PGD ascends it and compares restarts by
it. They return one value per sample, `(N,)`, so that summing them and taking
the gradient gives each sample its own gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "lecture", "margin")


def _largest_other(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`max_{j != label} z_j` per sample."""
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.amax(dim=1)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`z_label - max_{j != label} z_j`: positive when `label` is the prediction."""
    return logits.gather(1, labels[:, None]).squeeze(1) - _largest_other(logits, labels)


def objective(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str
) -> torch.Tensor:
    """The per-sample value an attack maximizes.

    - `"ce"`: untargeted `CE(z, y)`; targeted `-CE(z, target)`.
    - `"lecture"`: targeted `CE(z, y) - CE(z, target)`, the course's
      `L(x) = -e(y, y_hat) + e(y, y_target)` negated for ascent;
      untargeted the same as `"ce"`. The log-sum-exp cancels, leaving
      `z_target - z_y`: it lifts the target above the true class but ignores
      the other classes, so it lands on the target less often than `"ce"`.
    - `"margin"`: the Carlini-Wagner logit margin
      (https://arxiv.org/abs/1608.04644): untargeted
      `max_{j != y} z_j - z_y`; targeted `z_t - max_{j != t} z_j`.

    Args:
        logits: The model's outputs.
        y: True labels.
        target: Target labels for a targeted attack, or None.
        loss: One of `LOSSES`.

    Returns:
        The objective per sample.

    Shape:
        logits `(N, K)`, y `(N,)`, target `(N,)` or None -> `(N,)`.
    """
    if target is None:
        if loss == "margin":
            return -_margin(logits, y)
        return F.cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        return _margin(logits, target)
    toward_target = -F.cross_entropy(logits, target, reduction="none")
    if loss == "lecture":
        return toward_target + F.cross_entropy(logits, y, reduction="none")
    return toward_target


def total(
    logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str
) -> torch.Tensor:
    """`objective(logits, y, target, loss).sum()`: what one gradient step ascends.

    The untargeted cross-entropy is summed inside its own kernel, which saves
    PGD an op forward and backward at every step.

    Shape:
        logits `(N, K)`, y `(N,)`, target `(N,)` or None -> `()`.
    """
    if target is None and loss != "margin":
        return F.cross_entropy(logits, y, reduction="sum")
    return objective(logits, y, target, loss).sum()


def succeeded(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Whether the attack has succeeded on each sample.

    Untargeted: the prediction differs from `y`; targeted: it equals `target`.

    Shape:
        logits `(N, K)`, y `(N,)`, target `(N,)` or None -> bool `(N,)`.
    """
    return prediction_succeeded(logits.argmax(dim=1), y, target)


def prediction_succeeded(
    prediction: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """`succeeded` from the predicted classes: the one rule of success.

    Shape:
        prediction `(N,)`, y `(N,)`, target `(N,)` or None -> bool `(N,)`.
    """
    return prediction != y if target is None else prediction == target
