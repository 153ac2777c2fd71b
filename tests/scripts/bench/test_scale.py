"""The scale suite end to end at tiny sizes (fresh processes), and its `--quick` run."""

import sys

import pytest
import torch

from scripts.bench import scale

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
]


def test_scale_section(rows_check):
    settings = scale.Settings(
        sizes=(64, 128), epsilons=(0.0, 0.1), steps=1, batch_size=32, repeats=1,
        train_samples=128, train_epochs=1,
    )  # fmt: skip
    (section,) = scale.bench(settings, torch.device("cpu"))
    rows_check(
        section,
        ["time, 64", "time, 128"]
        + ["peak RSS above pre-call RSS, strict allocator"] * 2
        + ["peak RSS above pre-call RSS, glibc default allocator"] * 2
        + ["absolute peak RSS"] * 2,
    )
    targets = [(row.what, row.target) for row in section.rows if row.target]
    assert [what for what, _ in targets] == [
        "time, 128 samples",
        "peak RSS above pre-call RSS, strict allocator, 128 samples",
    ]


def test_quick_run(tmp_path, quick_run):
    out = quick_run("scale", tmp_path / "BENCHMARKS.md")
    assert "time, 2000 samples" in out and "Robust accuracy (round 1): 500:" in out
