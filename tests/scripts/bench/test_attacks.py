"""The attacks suite end to end at tiny sizes, and its `--quick` run; no timing is asserted."""

import pytest
import torch

from scripts.bench import attacks
from scripts.bench.harness import targets_table


def test_even_grid_is_what_the_cli_runs_for_0_0_3_8():
    assert attacks.EVEN_LINF == (0.0, 0.0428571429, 0.0857142857, 0.1285714286, 0.1714285714,
                                 0.2142857143, 0.2571428571, 0.3)  # fmt: skip


def test_curve_settings_add_fixed_starts_except_on_the_dense_grid():
    labels = [c.label for c in attacks.curve_settings(attacks.Settings())]
    assert labels == [
        "linf even grid",
        "linf dense-low grid",
        "l2",
        "linf even grid, random_start=False",
        "l2, random_start=False",
    ]


def test_accuracy_table_counts_rounds_where_incremental_ends_higher():
    found = {
        "incremental": [[1.0, 0.5], [1.0, 0.6]],
        "scratch": [[1.0, 0.5], [1.0, 0.4]],
    }
    table = attacks.accuracy_table("m", (0.0, 0.1), found, n=10)
    assert "**incremental > from scratch in 1 of 4 (eps, round) pairs**" in table
    assert (
        "| 0.1 | 0.550 (0.500-0.600) | 0.450 (0.400-0.500) | **no** in 1 of 2 | +0, +2 |" in table
    )
    assert "torchattacks" not in table


@pytest.mark.slow
def test_attack_sections(rows_check):
    settings = attacks.Settings(
        train_epochs=1, samples=24, steps=2, repeats=1, step_repeats=1, step_budget=0.0,
        fgsm_calls=1, epsilons={"linf": (0.0, 0.1), "l2": (0.0, 1.0)},
        dense_low=(0.0, 0.05, 0.1), batch_size=16,
    )  # fmt: skip
    steps, curves = attacks.bench(settings, torch.device("cpu"))
    pairs = [(m, n) for m in ("mlp", "bncnn") for n in ("linf", "l2")]
    rows_check(
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
    rows_check(
        curves,
        [
            f"curve {k} PGD-2, {m}, {label}: {kind}"
            for m in ("mlp", "bncnn")
            for k, label, kinds in grids
            for kind in kinds
        ],
    )
    # The settings line, then one robust-accuracy table per model and curve comparison.
    tables = curves.extra[1:]
    assert len(tables) == 10 and all("| 0.1 |" in t or "| 1 |" in t for t in tables)
    assert targets_table([steps, curves]).count("<= 1.1") == 4


@pytest.mark.slow
def test_quick_run(tmp_path, quick_run):
    out = quick_run("attacks", tmp_path / "BENCHMARKS.md")
    assert out.startswith("## attacks") and "PGD-10 per step, bncnn, l2" in out
    assert "Robust accuracy, mlp, linf dense-low grid, 120 samples" in out
