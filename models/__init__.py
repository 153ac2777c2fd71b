"""The course's classifiers: an MLP, a CNN with batch normalization and a
self-attention classifier, built by name.

    import models
    net = models.build("bncnn", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.4])
    models.available()  # ('attention', 'bncnn', 'mlp')

Every model takes pixels in [0, 1] shaped (N, C, H, W) and returns logits
(N, K); its first layer normalizes with the per-channel ``mean`` and ``std``
options, so attack budgets are in pixel units.
"""

from models.attention import AttentionClassifier
from models.bncnn import BNCNN
from models.layers import Normalize
from models.mlp import MLP
from models.registry import DEFAULT_EPOCHS, Model, available, build

__all__ = [
    "BNCNN",
    "DEFAULT_EPOCHS",
    "MLP",
    "AttentionClassifier",
    "Model",
    "Normalize",
    "available",
    "build",
]
