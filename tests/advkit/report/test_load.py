"""Reading runs and records into typed objects."""

import pytest

from advkit import report, runs
from advkit.report import load


def test_runs_and_records_are_read_into_typed_objects(run_root, records):
    assert [p.name for p in report.find_runs([run_root])] == [
        "bncnn-adam",
        "mlp-adam",
        "mlp-momentum",
        "mlp-sgd",
    ]
    run = report.load_report_run(run_root / "mlp-adam")
    assert (run.model, run.optimizer, run.dataset, run.finished) == ("mlp", "adam", "digits", True)
    assert (
        run.test_accuracy == runs.read_json(run_root / "mlp-adam" / runs.SUMMARY)["test_accuracy"]
    )
    assert run.metric_rows == len(run.epochs) == 2
    by_name = {rec.setting.slug: rec for rec in run.records}
    assert set(by_name) == {"pgd-linf-untargeted", "pgd-l2-untargeted", "pgd-linf-target-random"}
    rec = by_name["pgd-linf-target-random"]
    raw = records[rec.path]
    assert rec.curve.accuracy == raw["curve"]["accuracy"]
    assert rec.curve.clean_accuracy == raw["curve"]["clean_accuracy"]
    assert rec.setting == ("pgd", "linf", "random", "ce", "test")
    assert rec.steps == 3 and rec.examples is not None and len(rec.examples["y"]) == 6
    assert rec.examples_eps == raw["examples"]["eps"]
    assert rec.label == "PGD-3 (first 48) targeted (random)"


def test_the_split_is_part_of_the_setting_and_its_file_name():
    test = report.Setting("pgd", "linf", None, "ce", "test")
    val = report.Setting("pgd", "linf", None, "ce", "val")
    assert test != val and test.slug == "pgd-linf-untargeted"
    assert val.slug == "pgd-linf-untargeted-val" and val.title == "PGD L∞ untargeted, val split"
    assert report.Setting("fgsm", "l2", 3, "margin").slug == "fgsm-l2-target-3-margin"
    assert sorted([val, test], key=report.Setting.sort_key) == [test, val]


def _raw(**curve):
    return {
        "run": "r",
        "model": "mlp",
        "optimizer": "adam",
        "dataset": "digits",
        "settings": {"attack": "square", "norm": "linf", "epsilons": [0.0, 0.1], "queries": 100},
        "curve": {
            "epsilons": [0.0, 0.1],
            "accuracy": [0.9, 0.5],
            "success_rate": [0.0, 0.4],
            "clean_accuracy": 0.9,
            "n_samples": 10,
            "n_excluded": 0,
            "seconds": 1.0,
            "checks": [],
            **curve,
        },
    }


def test_a_counted_cost_is_read_when_the_record_has_one(tmp_path):
    path = tmp_path / "square.json"
    assert load.parse_record(_raw(), path).curve.cost is None
    counted = _raw()
    counted["curve"]["passes"] = {"forward": 300, "backward": 100}
    assert load.parse_record(counted, path).curve.cost == 40.0  # passes per sample
    rec = load.parse_record(_raw(), path)
    assert rec.label == "SQUARE untargeted" and rec.setting.split == "test"


def test_bad_records_and_examples_name_the_file(tmp_path):
    with pytest.raises(runs.RunError, match="x.json is not an attack record"):
        load.parse_record({"settings": {}, "curve": {}}, tmp_path / "x.json")
    bad = _raw()
    bad["curve"]["epsilons"] = [0.1, 0.0]
    with pytest.raises(runs.RunError, match="increasing"):
        load.parse_record(bad, tmp_path / "x.json")
    with pytest.raises(runs.RunError, match="lacks x_adv"):
        load.check_examples({"x": None}, "g.safetensors")
