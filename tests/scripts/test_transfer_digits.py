"""Smoke test of scripts/transfer_digits.py on untrained models (no training, tiny sizes)."""

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import models

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def transfer(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import transfer_digits

    return transfer_digits


def test_measure_gives_a_row_per_victim_and_source(transfer):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nets = {
            name: models.build(name, input_shape=(1, 8, 8), num_classes=10)
            for name in transfer.MODELS
        }
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (12,), generator=generator)
    rows = transfer.measure(nets, x, y, eps=0.2, steps=2, seeds=2)
    assert [(r["victim"], r["source"]) for r in rows] == [
        ("mlp", "bncnn"), ("mlp", "attention"), ("mlp", "bncnn + attention"),
        ("bncnn", "mlp"), ("bncnn", "attention"), ("bncnn", "mlp + attention"),
        ("attention", "mlp"), ("attention", "bncnn"), ("attention", "mlp + bncnn"),
    ]  # fmt: skip
    for row in rows:
        for name in transfer.ATTACKS:
            assert 0 <= row[name] <= 1 and 0 <= row[f"{name} source accuracy"] <= 1
            assert math.isclose(row[name] * 12 * 2, round(row[name] * 12 * 2))  # seeds averaged
    table = transfer.table(rows, 0.2, 2, 2)
    assert table.count("\n| ") == 10 and "DIM-MI-FGSM" in table


def test_runs_pattern_must_name_the_model(transfer):
    result = CliRunner().invoke(transfer.main, ["--runs", "runs/x"])
    assert result.exit_code == 2 and "{model}" in result.output
