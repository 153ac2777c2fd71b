"""Shared test settings.

One torch thread: on this 2-core machine, OpenMP spin-waiting with two threads
made training steps ~100x slower whenever another process was busy
(see shared/BENCHMARKING.md). Child processes get OMP_WAIT_POLICY=PASSIVE.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

from advkit.data import Dataset, load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """The bundled digits, split with seed 0 (the only real data in the suite)."""
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def small_digits(digits: Dataset) -> Dataset:
    """A 320-image slice of digits for tests that train many models."""
    return Dataset(
        name="digits",
        x_train=digits.x_train[:320],
        y_train=digits.y_train[:320],
        x_val=digits.x_val[:64],
        y_val=digits.y_val[:64],
        x_test=digits.x_test[:64],
        y_test=digits.y_test[:64],
        num_classes=10,
        # A slice of digits for speed: runs trained on it are attacked on digits itself.
        sha256=digits.sha256,
        path=digits.path,
    )
