"""Smoke test of the benchmark scripts: tiny sizes, one round, tables with the right rows.

No timing is asserted (that is what `make bench` is for); this only checks
that every section runs end to end and reports finite numbers.
"""

import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def bench(monkeypatch):
    """The benchmark modules, importable the way `python scripts/bench.py` imports them."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_attacks
    import bench_common
    import bench_scale
    import bench_train

    return bench_attacks, bench_common, bench_train, bench_scale


def _check_rows(section, expected: list[str]) -> None:
    whats = [row.what for row in section.rows]
    assert len(whats) == len(expected), whats
    for what, start in zip(whats, expected, strict=True):
        assert what.startswith(start), (what, start)
    for row in section.rows:
        assert row.values and all(math.isfinite(v) for v in row.values), row
        assert row.ratios is None or all(math.isfinite(r) and r > 0 for r in row.ratios), row
        assert len(row.cells()) == 6
    text = section.markdown()
    assert text.startswith(f"## {section.title}") and text.count("\n| ") >= len(expected) + 1


def test_attack_sections(bench):
    bench_attacks, bench_common, _, _ = bench
    settings = bench_attacks.AttackSettings(
        train_epochs=1,
        samples=24,
        steps=2,
        repeats=1,
        step_repeats=1,
        step_budget=0.0,
        fgsm_calls=1,
        epsilons={"linf": (0.0, 0.1), "l2": (0.0, 1.0)},
        dense_low=(0.0, 0.05, 0.1),
        batch_size=16,
    )
    steps, curves = bench_attacks.run_attacks(settings, torch.device("cpu"))
    pairs = [(m, n) for m in ("mlp", "bncnn") for n in ("linf", "l2")]
    _check_rows(
        steps,
        [s for m, n in pairs for s in (f"PGD-2 per step, {m}, {n}", f"FGSM, {m}, {n}", "floor")],
    )
    random_start = ["advkit incremental"] * 2 + [
        "attack forward+backward",
        "advkit from scratch",
        "torchattacks from scratch",
    ]
    fixed_start = ["advkit incremental", "attack forward+backward", "advkit from scratch"]
    grids = [
        ("2 eps", "linf even grid", random_start),
        ("3 eps", "linf dense-low grid", random_start),
        ("2 eps", "l2", random_start),
        ("2 eps", "linf even grid, random_start=False", fixed_start),
        ("2 eps", "l2, random_start=False", fixed_start),
    ]
    _check_rows(
        curves,
        [
            f"curve {k} PGD-2, {m}, {label}: {kind}"
            for m in ("mlp", "bncnn")
            for k, label, kinds in grids
            for kind in kinds
        ],
    )
    # One robust-accuracy table per model and curve comparison, after the settings note.
    tables = curves.after[1:]
    assert len(tables) == 10 and all("| 0.1 |" in t or "| 1 |" in t for t in tables)
    report = bench_common.report([steps, curves], "machine", "command", "footer")
    assert "## Targets" in report and report.count("<= 1.1") >= 4


def test_training_section(bench):
    _, _, bench_train, _ = bench
    settings = bench_train.TrainSettings(n_train=384, n_test=64, epochs=1, repeats=1)
    section = bench_train.bench_training(settings, torch.device("cpu"))
    _check_rows(
        section,
        [
            "advkit.train.train",
            "advkit.train.train",
            "advkit.train.train epoch",
            "plain PyTorch loop",
            "plain PyTorch loop",
            "torchvision MNIST",
            "torchvision MNIST",
            "advkit.train.train",
            "torchvision MNIST",
        ],
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_scale_section(bench):
    _, _, _, bench_scale = bench
    settings = bench_scale.ScaleSettings(
        sizes=(64, 128),
        epsilons=(0.0, 0.1),
        steps=1,
        batch_size=32,
        repeats=1,
        train_samples=128,
        train_epochs=1,
    )
    section = bench_scale.bench_scale(settings, torch.device("cpu"))
    memory = ["peak RSS above pre-call RSS, strict allocator"] * 2
    _check_rows(
        section,
        ["time, 64", "time, 128", *memory]
        + ["peak RSS above pre-call RSS, glibc default allocator"] * 2
        + ["absolute peak RSS"] * 2,
    )
