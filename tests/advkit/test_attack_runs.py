"""attack_run: the record, and a gallery made of the curve's own attacked samples."""

import pytest
import torch
from safetensors.torch import load_file

from advkit import runs
from advkit.attack_runs import attack_run, find_complete
from advkit.evaluate import robustness_curve
from advkit.records import AttackSettings, read_record, record_path
from advkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("runs") / "mlp-adam"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


def test_gallery_shows_the_targets_and_points_the_curve_attacked(trained, small_digits):
    # Before the fix the gallery drew its random targets from a fresh generator while
    # the curve drew its per-eps seeds first: same seed, other targets than the curve's.
    settings = AttackSettings.make(epsilons=[0.0, 0.1, 0.2], target="random", steps=3, limit=48)
    record = attack_run(trained, settings, data=small_digits, n_examples=6, figure=False)
    gallery = load_file(
        str(record_path(trained, settings).with_suffix("")) + ".examples.safetensors"
    )
    model, _ = runs.load_run(trained)
    x, y = small_digits.x_test[:48], small_digits.y_test[:48]
    curve = robustness_curve(model, x, y, [0.0, 0.1, 0.2], examples=48, **settings.curve_kw())
    column = curve.epsilons.index(record.examples["eps"])
    for i in range(len(gallery["x"])):
        (row,) = [j for j in range(48) if torch.equal(curve.examples["x"][j], gallery["x"][i])]
        assert gallery["target"][i] == curve.examples["target"][row]
        assert torch.equal(gallery["x_adv"][i], curve.examples["x_adv"][row, column])


def test_find_complete_knows_the_settings_and_the_run_they_were_made_on(trained, small_digits):
    settings = AttackSettings.make(epsilons=[0.0, 0.1], steps=2, limit=16)
    assert find_complete(trained, settings) is None
    attack_run(trained, settings, data=small_digits, n_examples=2, figure=False)
    found = find_complete(trained, settings)
    assert found is not None and found.settings == settings
    assert (
        find_complete(trained, AttackSettings.make(epsilons=[0.0, 0.1], steps=3, limit=16)) is None
    )
    # A retrained run (another config) makes the record stale.
    config = runs.read_json(trained / runs.CONFIG)
    runs.write_json(trained / runs.CONFIG, {**config, "optimizer": {"name": "sgd"}})
    try:
        assert find_complete(trained, settings) is None
    finally:
        runs.write_json(trained / runs.CONFIG, config)
    assert read_record(record_path(trained, settings)).curve.n_samples == 16
