"""Tiny models and data for the attack tests (CPU, milliseconds per call).

Factories are handed out through session-scoped fixtures, so hypothesis tests
can build a fresh model per example.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch
from torch import nn


def _bn_model(classes: int = 4, seed: int = 0) -> nn.Module:
    """A small CNN with batch norm and dropout for `(N, 1, 4, 4)` inputs, in train mode.

    Its BN running statistics are off their defaults and one submodule is in
    eval mode, so an attack that runs the model in train mode, updates the
    statistics or restores only the top-level flag is caught.
    """
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(48, classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        model(torch.rand(16, 1, 4, 4, generator=generator))  # moves the running statistics
    model.train()
    model[4].eval()
    return model


def _flat_model(features: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    """An MLP with BatchNorm1d for flat `(N, D)` inputs, float64, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(features, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, classes)
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        model(torch.rand(16, features, generator=generator, dtype=torch.float64))
    return model.eval()


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
    }


@contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Assert that the block leaves weights, buffers, grads and every training flag alone."""
    before = _snapshot(model)
    yield
    after = _snapshot(model)
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)


@pytest.fixture(scope="session")
def make_bn_model() -> Callable[..., nn.Module]:
    return _bn_model


@pytest.fixture(scope="session")
def make_flat_model() -> Callable[..., nn.Module]:
    return _flat_model


@pytest.fixture(scope="session")
def untouched() -> Callable[[nn.Module], AbstractContextManager[None]]:
    return _untouched


@pytest.fixture
def bn_model() -> nn.Module:
    return _bn_model()


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """8 images `(8, 1, 4, 4)` in `[0, 1]` and labels of 4 classes."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 4, 4, generator=generator)
    y = torch.randint(0, 4, (8,), generator=generator)
    return x, y


class LinearProblem:
    """A 2-class linear model `nn.Linear(d, 2)` in float64 on unbounded data (use `clip=None`).

    The optimal attack is known in closed form: an L-inf budget eps lowers the
    true-class margin by exactly `eps * ||w_1 - w_0||_1`, an L2 budget by
    `eps * ||w_1 - w_0||_2`.
    """

    def __init__(self, d: int = 10, n: int = 400, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.model = nn.Linear(d, 2).double()
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(2, d, generator=generator, dtype=torch.float64))
            self.model.bias.copy_(torch.randn(2, generator=generator, dtype=torch.float64))
        self.x = torch.randn(n, d, generator=generator, dtype=torch.float64)
        self.y = torch.randint(0, 2, (n,), generator=generator)
        w = self.model.weight.detach()
        self.dual_norm = {"linf": (w[1] - w[0]).abs().sum(), "l2": (w[1] - w[0]).norm()}

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """`z_y - z_other` per sample: positive when correctly classified."""
        with torch.no_grad():
            z = self.model(x)
        sign = 1 - 2 * self.y.double()  # +1 for class 0, -1 for class 1
        return sign * (z[:, 0] - z[:, 1])

    def robust_accuracy(self, eps: float, norm: str) -> float:
        """The exact accuracy under the optimal attack."""
        return (self.margin(self.x) > eps * self.dual_norm[norm]).double().mean().item()


@pytest.fixture
def linear_problem() -> LinearProblem:
    return LinearProblem()


class ForwardCounter(nn.Module):
    """Wraps a model and counts its forward passes and the samples they see."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.samples += len(x)
        return self.model(x)


@pytest.fixture(scope="session")
def forward_counter() -> type[ForwardCounter]:
    return ForwardCounter
