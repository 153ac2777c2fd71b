"""A new attack is one function and one registry entry: nothing in advkit changes.

Two toy attacks are registered at run time, one without gradients or options
(uniform noise in the ball) and one with `steps` but no `restarts`; each flows
through robustness_curve, the record writer and the report.
"""

import csv

import pytest
import torch

import attacks
from advkit import report
from advkit.attack_runs import attack_run
from advkit.evaluate import robustness_curve
from advkit.records import AttackSettings, read_record, record_path
from advkit.train import TrainConfig, train


def noise(
    model, x, y, eps, *, norm="linf", target=None, loss="ce", clip=(0.0, 1.0), generator=None
):
    """Uniform noise in the L-inf box (or a random L2 direction at radius eps): no gradients."""
    p = attacks.checks.prepare(x, y, eps, norm=norm, target=target, loss=loss, clip=clip)
    g = generator or torch.Generator().manual_seed(0)
    delta = torch.rand(p.x.shape, generator=g, device=g.device).to(p.x.device) * 2 - 1
    if norm == "l2":
        delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
    point = p.x + delta * p.eps.view(-1, *[1] * (x.ndim - 1))
    return p.finish(attacks.norms.ball(p.x, p.eps, norm, p.clip).project(point))


def walk(model, x, y, eps, *, norm="linf", steps=3, target=None, loss="ce", clip=(0.0, 1.0)):
    """FGSM split into `steps` equal steps, without random start or restarts."""
    for _ in range(steps):
        x = attacks.fgsm(model, x, y, eps / steps, norm=norm, target=target, loss=loss, clip=clip)
    return x


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("runs") / "mlp-adam"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


@pytest.mark.slow  # trains, attacks and builds a report
@pytest.mark.parametrize(
    "name, attack, options", [("noise", noise, {}), ("walk", walk, {"steps": 2})]
)
def test_a_registered_attack_flows_through_curve_record_and_report(
    monkeypatch, trained, small_digits, tmp_path, name, attack, options
):
    monkeypatch.setitem(attacks.ATTACKS, name, attack)
    x, y = small_digits.x_test[:32], small_digits.y_test[:32]
    curve = robustness_curve(_model(trained), x, y, [0, 0.1, 0.3], attack=name, **options)
    assert curve.settings["attack"] == name and curve.passes["forward"] > 0
    assert curve.accuracy == sorted(curve.accuracy, reverse=True)

    settings = AttackSettings.make(attack=name, epsilons=[0.0, 0.1, 0.3], limit=32, **options)
    record = attack_run(trained, settings, data=small_digits, n_examples=4, figure=True)
    assert read_record(record_path(trained, settings)).settings == settings
    assert (trained / "figures" / f"{record.name}.png").exists()

    out = tmp_path / "report"
    result = report.build_report([trained], out, eps_linf=0.1)
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["attack"] == name]
    assert rows and float(rows[0]["clean_accuracy"]) == pytest.approx(
        record.curve.clean_accuracy, abs=1e-4
    )
    # The curves and heatmap of the L-inf untargeted cell rest on this attack alone.
    assert any(p.name.startswith("curves-digits-linf-untargeted") for p in result["figures"])
    assert any(p.name.startswith("comparison-digits-linf-untargeted") for p in result["figures"])
    assert name.upper() in (out / "index.html").read_text(encoding="utf-8")


def _model(run_dir):
    from advkit.runs import load_run

    return load_run(run_dir)[0]
