"""The transfer suite on untrained models at tiny sizes (no training), and its `--quick` run."""

import math

import pytest
import torch

import models
from scripts.bench import transfer


@pytest.mark.slow  # four transfer matrices
def test_matrix_rows_and_order_checks_on_untrained_models():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = {
            name: models.build(name, input_shape=(1, 8, 8), num_classes=10)
            for name in transfer.MODELS
        }
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (12,), generator=generator)
    settings = transfer.Settings(eps=0.2, steps=2, seeds=2)
    rows = transfer.measure(nets, x, y, settings)
    assert [(r["victim"], r["source"]) for r in rows] == [
        ("mlp", "bncnn"), ("mlp", "attention"), ("mlp", "bncnn + attention"),
        ("bncnn", "mlp"), ("bncnn", "attention"), ("bncnn", "mlp + attention"),
        ("attention", "mlp"), ("attention", "bncnn"), ("attention", "mlp + bncnn"),
    ]  # fmt: skip
    for row in rows:
        for name, (_, options) in transfer.ATTACKS.items():
            assert len(row[name]) == (2 if options.get("diversity") else 1)
            assert all(0 <= v <= 1 and math.isclose(v * 12, round(v * 12)) for v in row[name])
    checks = transfer.order_rows(rows)
    assert len(checks) == 3 * len(transfer.ORDER)
    assert all(c.target == ("<=", 0.0) and c.met is not None for c in checks)
    (section,) = transfer.bench(nets, x, y, settings)
    text = section.markdown()
    assert text.count("\n| mlp |") == 3 and "DIM-TI-MI-FGSM" in text and "eps=0.2" in text


@pytest.mark.slow
def test_quick_run(tmp_path, quick_run):
    out = quick_run("transfer", tmp_path / "BENCHMARKS.md")
    assert "| attention | " in out and "white-box PGD" in out
