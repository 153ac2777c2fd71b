"""MNIST-shaped data for the train and scale suites (nothing can be downloaded here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` MNIST-shaped digits: uint8 `(n, 28, 28)` images and int64 labels.

    scikit-learn's 8x8 digits scaled to a 20x20 box in a 28x28 canvas (as
    MNIST centers its digits), shifted by up to 2 pixels, with a little noise.
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    pick = rng.integers(0, len(digits.target), n)
    small = torch.from_numpy(digits.images[pick].astype(np.float32) / 16.0)[:, None]
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)[:, 0]
    canvas = torch.zeros(n, 28, 28)
    shifts = rng.integers(-2, 3, (n, 2))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            canvas[rows, 4 + dy : 24 + dy, 4 + dx : 24 + dx] = big[rows]
    noise = torch.from_numpy(rng.normal(0.0, 0.05, (n, 28, 28)).astype(np.float32))
    images = ((canvas + noise).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, digits.target[pick].astype(np.int64)


def mnist_tensors(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`mnist_like` as advkit holds data: float32 `(n, 1, 28, 28)` in [0, 1] and int64 labels."""
    images, labels = mnist_like(n, seed)
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], torch.from_numpy(labels)


def write_idx_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write MNIST's four IDX files (unpacked, as torchvision reads them) under `root/MNIST/raw`."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    x, y = mnist_like(n_train + n_test, seed)
    for prefix, part in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        images, labels = x[part], y[part].astype(np.uint8)
        head = np.array([0x803, len(images), 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(head + images.tobytes())
        head = np.array([0x801, len(labels)], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(head + labels.tobytes())
    return root
