"""An ensemble of classifiers as one model, the usual source model of transfer attacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attacks.runtime import eval_mode, logits_of

AVERAGES = ("logits", "log_softmax")


class Ensemble(nn.Module):
    """Several classifiers averaged into one, Liu et al. 2017 (https://arxiv.org/abs/1611.02770).

    The forward pass runs every member in eval mode and returns the weighted
    mean of their logits (or of their log-probabilities with
    `average="log_softmax"`), so any attack crafted on the ensemble aims at
    all members at once; Dong et al. 2018 (MI-FGSM) found averaging logits
    transfers best. Members are left as they were: their `training` flags
    (`train()` and `eval()` on the ensemble change only the ensemble's own
    flag), parameters, gradients and batch-norm statistics.

    ```python
    source = attacks.Ensemble([mlp, cnn])
    x_adv = attacks.mifgsm(source, x, y, 0.2, diversity=0.5)
    ```

    Args:
        models: The members, each mapping `x` to logits `(N, K)` with the same `K`
            (or any output `attacks.logits_of` accepts).
        weights: One finite weight >= 0 per member, not all 0, normalized to sum
            to 1; None weighs members equally.
        average: `"logits"` or `"log_softmax"`.

    Raises:
        ValueError: For a bad argument (naming it), or, in `forward`, members
            whose outputs differ in shape.

    Shape:
        x `(N, ...)` -> `(N, K)`.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        average: str = "logits",
    ) -> None:
        super().__init__()
        if (
            isinstance(models, nn.Module)
            or not isinstance(models, Sequence)
            or not models
            or not all(isinstance(m, nn.Module) for m in models)
        ):
            raise ValueError(f"models must be a non-empty sequence of nn.Module, got {models!r}")
        if not isinstance(average, str) or average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        self.members = nn.ModuleList(models)
        self.average = average
        self.weights = _normalized(weights, len(models))

    def train(self, mode: bool = True) -> Ensemble:
        """Set the ensemble's own flag only: members always run in eval mode, untouched."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The weighted mean of the members' logits (or log-probabilities)."""
        total: torch.Tensor | None = None
        for i, (member, weight) in enumerate(zip(self.members, self.weights, strict=True)):
            with eval_mode(member):
                out = logits_of(member(x))
            if self.average == "log_softmax":
                out = F.log_softmax(out, dim=-1)
            if total is not None and out.shape != total.shape:
                raise ValueError(
                    f"models must all return logits of one shape, got {tuple(total.shape)} "
                    f"from member 0 and {tuple(out.shape)} from member {i}"
                )
            total = out * weight if total is None else total + out * weight
        assert total is not None  # members is not empty
        return total


def _normalized(weights: Sequence[float] | None, count: int) -> list[float]:
    """The member weights, summing to 1."""
    if weights is None:
        return [1.0 / count] * count
    if (
        isinstance(weights, (str, bytes))
        or not isinstance(weights, Sequence)
        or len(weights) != count
        or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights
        )
        or not sum(weights) > 0
    ):
        raise ValueError(
            f"weights must be None or {count} finite numbers >= 0 (one per model), "
            f"not all 0, got {weights!r}"
        )
    total = float(sum(weights))
    return [float(w) / total for w in weights]
