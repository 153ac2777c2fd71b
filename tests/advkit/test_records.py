"""Attack settings and records: identity, file names, one check when read."""

import json

import pytest

from advkit.evaluate import robustness_curve
from advkit.records import AttackRecord, AttackSettings, RecordError, read_record

BASE = {"epsilons": [0.0, 0.1]}


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 20},
        {"restarts": 2},
        {"epsilons": [0.0, 0.2]},
        {"target": "random"},
        {"split": "val"},
        {"limit": 20},
        {"seed": 1},
        {"loss": "margin"},
        {"norm": "l2"},
        {"attack": "fgsm"},
        {"batch_size": 64},
        {"random_start": False},
    ],
)
def test_every_setting_that_changes_the_numbers_changes_the_name(change):
    assert AttackSettings.make(**{**BASE, **change}).name != AttackSettings.make(**BASE).name


def test_the_name_reads_as_the_setting_and_includes_the_split():
    name = AttackSettings.make(**BASE, target="random", loss="margin", split="val").name
    assert name.startswith("pgd-linf-target-random-margin-val-")
    assert AttackSettings.make(**BASE).name.startswith("pgd-linf-untargeted-")


def test_defaults_are_filled_in_from_the_signature_so_equal_settings_are_equal():
    assert AttackSettings.make(**BASE) == AttackSettings.make(**BASE, steps=10, loss="ce")
    assert AttackSettings.make(**BASE).options["steps"] == 10
    assert "steps" not in AttackSettings.make(**BASE, attack="fgsm").options


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"attack": "fgsm", "steps": 3}, "fgsm does not take"),
        ({"attack": "cw"}, "attack"),
        ({"split": "train"}, "split"),
        ({"limit": 0}, "limit"),
        ({"target": 1.5}, "target"),
    ],
)
def test_bad_settings_are_refused_naming_them(bad, match):
    with pytest.raises(ValueError, match=match):
        AttackSettings.make(**{**BASE, **bad})


def test_a_record_round_trips_and_stores_settings_once(tmp_path, small_digits):
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    settings = AttackSettings.make(**BASE, steps=2)
    x, y = small_digits.x_test[:16], small_digits.y_test[:16]
    curve = robustness_curve(model, x, y, settings.epsilons, **settings.curve_kw())
    record = AttackRecord(settings, curve, "r", "mlp", "adam", "digits", "abc", {})
    d = record.to_dict()
    assert "settings" not in d["curve"] and d["settings"]["steps"] == 2
    assert d["curve"]["passes"]["backward"] > 0 and d["curve"]["cost"]["forward"] > 0
    path = tmp_path / "r.json"
    path.write_text(json.dumps(d))
    again = read_record(path)
    assert again.settings == settings and again.curve.accuracy == curve.accuracy
    assert again.to_dict() == d


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("curve"),
        lambda d: d["curve"].update(accuracy=[0.5]),
        lambda d: d["curve"].update(accuracy=[2.0, 0.5]),
        lambda d: d["settings"].update(norm="l7"),
    ],
)
def test_a_damaged_record_is_refused_when_read(tmp_path, damage):
    d = {
        "run": "r", "model": "mlp", "optimizer": "adam", "dataset": "digits",
        "settings": {"attack": "pgd", "norm": "linf", "epsilons": [0.0, 0.1]},
        "curve": {"epsilons": [0.0, 0.1], "accuracy": [1.0, 0.5], "success_rate": [0.0, 0.5]},
    }  # fmt: skip
    damage(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(RecordError, match="bad.json"):
        read_record(path)
