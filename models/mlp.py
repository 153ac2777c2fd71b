"""The course's multilayer perceptron: flatten, then Linear -> ReLU -> Dropout blocks.

Read top to bottom: the saved settings (`MLPConfig`), then the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.layers import (
    Normalize,
    check_dropout,
    check_input_shape,
    check_int,
    check_int_list,
    check_per_channel,
    count_parameters,
)

__all__ = ["MLP", "MLPConfig"]


@dataclass(frozen=True)
class MLPConfig:
    """Everything needed to rebuild an `MLP` (weights aside)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class MLP(nn.Module):
    """Multilayer perceptron on flattened pixels.

    ``Normalize -> Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear``.

    Args:
        input_shape: ``(C, H, W)`` of one input image.
        num_classes: number of classes K (the width of the logits).
        hidden: widths of the hidden layers, in order; ``[]`` gives a linear
            (softmax-regression) classifier.
        dropout: dropout probability after each hidden ReLU; 0 turns it off.
        mean: per-channel mean of the training pixels (C numbers), or None for 0.
        std: per-channel standard deviation (C numbers > 0), or None for 1.

    Raises:
        ValueError: naming the first argument that is out of range.

    Shape:
        (N, C, H, W) pixels in [0, 1] -> (N, K) logits.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        shape = check_input_shape(input_shape)
        self.config = MLPConfig(
            input_shape=shape,
            num_classes=check_int("num_classes", num_classes, minimum=2),
            hidden=check_int_list("hidden", hidden),
            dropout=check_dropout("dropout", dropout),
            mean=check_per_channel("mean", mean, shape[0]),
            std=check_per_channel("std", std, shape[0]),
        )
        cfg = self.config
        channels, height, width = cfg.input_shape
        self.normalize = Normalize(channels, cfg.mean, cfg.std)
        self.flatten = nn.Flatten()  # (N, C*H*W)
        layers: list[nn.Module] = []
        width_in = channels * height * width
        for width_out in cfg.hidden:
            layers += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width_in = width_out
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)  # (N, C, H, W)
        x = self.flatten(x)  # (N, C*H*W)
        x = self.hidden(x)  # (N, hidden[-1])
        return self.head(x)  # (N, K)

    def num_parameters(self) -> int:
        """Number of trainable parameters (the mean/std buffers are not counted)."""
        return count_parameters(self)
