"""Attack objectives: per-sample losses that an attack pushes up.

Every objective is written so that larger is better for the attacker, for
targeted and untargeted attacks alike; PGD ascends it and compares restarts by
it. They return one value per sample, `(N,)`, so that summing them and taking
the gradient gives each sample its own gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "lecture", "margin", "dlr")

# Keeps the DLR ratio finite where the top logits tie (the paper's constant).
DLR_FLOOR = 1e-12


def _largest_other(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`max_{j != label} z_j` per sample."""
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.amax(dim=1)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`z_label - max_{j != label} z_j`: positive when `label` is the prediction."""
    return logits.gather(1, labels[:, None]).squeeze(1) - _largest_other(logits, labels)


def _dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The difference-of-logits ratio, larger is better for the attacker (see `objective`).

    The denominator, a spread of the sorted logits `z_(1) >= z_(2) >= ...`,
    makes the loss invariant to shifting and scaling the logits. It needs the
    third (untargeted) or the third and fourth (targeted) largest logit: with
    fewer classes the last one stands in (K = 3 targeted: `z_(1) - z_(3)`),
    and with K = 2 every ratio would be +-1 with a zero gradient, so the
    denominator is 1 and DLR is the margin loss.
    """
    k = logits.shape[1]
    if target is None:
        numerator = -_margin(logits, y)
    else:
        numerator = (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).squeeze(1)
    if k < 3:
        return numerator
    top = logits.topk(min(k, 4), dim=1).values  # (N, min(K, 4)), sorted descending
    if target is None:
        spread = top[:, 0] - top[:, 2]
    else:
        spread = top[:, 0] - (top[:, 2] + top[:, -1]) / 2
    return numerator / (spread + DLR_FLOOR)


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
    - `"dlr"`: the difference-of-logits ratio of Croce & Hein 2020
      (https://arxiv.org/abs/2003.01690), with sorted logits
      `z_(1) >= z_(2) >= ...`: untargeted
      `(max_{j != y} z_j - z_y) / (z_(1) - z_(3))`; targeted
      `(z_t - z_y) / (z_(1) - (z_(3) + z_(4)) / 2)`. Small K: see `_dlr`.
      Like `"lecture"`, the targeted DLR lifts the target above the true
      class only, not above the others (it is meant to misclassify).

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
    if loss == "dlr":
        return _dlr(logits, y, target)
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
    if target is None and loss in ("ce", "lecture"):
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
