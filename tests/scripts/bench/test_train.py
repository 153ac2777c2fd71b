"""The train suite end to end at tiny sizes, and its `--quick` run; no timing is asserted."""

import pytest
import torch

from scripts.bench import train


@pytest.mark.slow
def test_training_section(rows_check):
    settings = train.Settings(n_train=384, n_test=64, epochs=1, repeats=1)
    (section,) = train.bench(settings, torch.device("cpu"))
    rows_check(
        section,
        ["advkit.train.train"] * 2
        + ["advkit.train.train epoch", "plain PyTorch loop", "plain PyTorch loop"]
        + ["torchvision MNIST", "torchvision MNIST", "advkit.train.train", "torchvision MNIST"],
    )
    assert [row.target for row in section.rows if row.target] == [(">=", 0.95), (">=", 3.0)]
    assert "advkit holds out 32 for validation" in section.extra[0]


@pytest.mark.slow
def test_quick_run(tmp_path, quick_run):
    out = quick_run("train", tmp_path / "BENCHMARKS.md")
    assert "advkit.train.train, 2750 images" in out and "(batch 256;" in out
