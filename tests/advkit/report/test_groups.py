"""Seeds form one group (mean and spread equal to the records'); datasets never mix."""

import shutil
import statistics

import pytest

from advkit import report, runs
from advkit.report.combine import CellKey, run_cells
from advkit.report.groups import by_dataset, cell_stat, group_runs
from advkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, small_digits, attack_fn):
    root = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1):
        out = root / f"mlp-adam-s{seed}"
        train(TrainConfig(model="mlp", optimizer="adam", epochs=1, seed=seed), out,
              dataset=small_digits)  # fmt: skip
        attack_fn(out, small_digits)
    return root


def test_runs_differing_only_by_seed_form_one_group_with_the_records_mean_and_spread(seeded):
    loaded = [report.load_report_run(p) for p in report.find_runs([seeded])]
    groups = group_runs(loaded)
    assert len(groups) == 1 and groups[0].seeds == [0, 1]
    stat = cell_stat(groups[0], CellKey("linf", None), 0.1)
    direct = []
    for path in sorted(seeded.glob("*/attacks/*.json")):
        curve = runs.read_json(path)["curve"]
        direct.append(curve["accuracy"][curve["epsilons"].index(0.1)])
    assert sorted(stat.values) == sorted(direct)
    assert stat.mean == pytest.approx(statistics.fmean(direct))
    assert (stat.lo, stat.hi) == (min(direct), max(direct))


@pytest.mark.slow  # builds another whole report
def test_two_datasets_never_share_a_figure(seeded, tmp_path):
    other = tmp_path / "runs" / "other-mlp-adam"
    shutil.copytree(seeded / "mlp-adam-s0", other)
    config = runs.read_json(other / runs.CONFIG)
    config["dataset"]["name"] = "other.npz"
    config["train_config"]["dataset"] = "other.npz"
    runs.write_json(other / runs.CONFIG, config)
    loaded = [report.load_report_run(p) for p in [seeded / "mlp-adam-s1", other]]
    assert list(by_dataset(group_runs(loaded))) == ["digits", "other.npz"]
    result = report.build_report([seeded / "mlp-adam-s1", other], tmp_path / "report")
    for path in result["figures"]:
        assert ("-digits-" in path.name) != ("-other.npz-" in path.name), path.name
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Dataset digits" in page and "Dataset other.npz" in page


def test_worst_case_merges_only_records_on_the_same_samples(seeded, small_digits, attack_fn,
                                                            tmp_path):  # fmt: skip
    from advkit.attack_runs import attack_run
    from advkit.records import AttackSettings

    run_dir = tmp_path / "run"
    shutil.copytree(seeded / "mlp-adam-s0", run_dir)
    attack_fn(run_dir, small_digits, attack="fgsm")
    attack_run(run_dir, AttackSettings.make(epsilons=[0.0, 0.1, 0.2], limit=20, steps=3),
               data=small_digits, n_examples=2, figure=False)  # fmt: skip
    cell = run_cells(report.load_report_run(run_dir))[CellKey("linf", None)]
    assert sorted(r.short for r in cell.records) == ["FGSM (first 48)", "PGD-3 (first 48)"]
    assert [r.short for r in cell.skipped] == ["PGD-3 (first 20)"]
    assert "complete evaluation on 48 samples" in cell.why
    fooled = [r.curve.per_sample["fooled_at"] for r in cell.records]
    robust = sum(all(f is None or f > 0.1 for f in col) for col in zip(*fooled, strict=True))
    assert cell.accuracy_at(0.1) == robust / 48
