"""The course's convolutional network with batch normalization.

Read top to bottom: one conv block (`ConvBlock`), the saved settings
(`BNCNNConfig`), then the classifier (`BNCNN`).

The network adapts to its input size: a block halves the feature map with a
2x2 max-pool only while the result stays at least `MIN_POOLED_SIZE` pixels
wide, so 8x8 digits are pooled once (8 -> 4) while 28x28 and 32x32 images are
pooled two or three times; a global average pool then makes the head
independent of what is left.
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

__all__ = ["BNCNN", "BNCNNConfig", "ConvBlock"]

MIN_POOLED_SIZE = 4
"""Smallest feature-map side a block may pool down to."""


class ConvBlock(nn.Module):
    """``Conv2d(3x3, same padding) -> BatchNorm2d -> ReLU -> MaxPool2d(2) or Identity``.

    The convolution has no bias: the batch norm's shift that follows makes it
    redundant.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        pool: halve the height and width with a 2x2 max-pool.

    Shape:
        (N, in_channels, H, W) -> (N, out_channels, H', W'), with
        H' = H // 2 when ``pool`` else H (same for W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


@dataclass(frozen=True)
class BNCNNConfig:
    """Everything needed to rebuild a `BNCNN` (weights aside)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class BNCNN(nn.Module):
    """Convolutional classifier: conv -> batch norm -> ReLU blocks, pooling, linear head.

    ``Normalize -> ConvBlock x len(channels) -> global average pool -> Dropout -> Linear``.
    Block i pools (2x2 max) only while the pooled map stays at least
    `MIN_POOLED_SIZE` wide, so small inputs such as 8x8 digits keep a usable
    map.

    Args:
        input_shape: ``(C, H, W)`` of one input image.
        num_classes: number of classes K (the width of the logits).
        channels: output channels of each conv block, in order (at least one).
        dropout: dropout probability before the linear head; 0 turns it off.
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
        channels: Sequence[int] = (32, 64, 128),
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        shape = check_input_shape(input_shape)
        widths = check_int_list("channels", channels)
        if not widths:
            raise ValueError(f"channels must list at least one block, got {channels!r}")
        self.config = BNCNNConfig(
            input_shape=shape,
            num_classes=check_int("num_classes", num_classes, minimum=2),
            channels=widths,
            dropout=check_dropout("dropout", dropout),
            mean=check_per_channel("mean", mean, shape[0]),
            std=check_per_channel("std", std, shape[0]),
        )
        cfg = self.config
        in_channels, height, width = cfg.input_shape
        self.normalize = Normalize(in_channels, cfg.mean, cfg.std)
        blocks = []
        size = min(height, width)
        for out_channels in cfg.channels:
            pool = size // 2 >= MIN_POOLED_SIZE
            size = size // 2 if pool else size
            blocks.append(ConvBlock(in_channels, out_channels, pool=pool))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(in_channels, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)  # (N, C, H, W)
        x = self.blocks(x)  # (N, channels[-1], H', W')
        x = self.flatten(self.pool(x))  # (N, channels[-1])
        return self.head(self.dropout(x))  # (N, K)

    def num_parameters(self) -> int:
        """Number of trainable parameters (BN running statistics are buffers, not counted)."""
        return count_parameters(self)
