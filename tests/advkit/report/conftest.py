"""Real runs for the report tests: tiny trained models, real attack records.

The runs are trained once per test session package (``scope="package"``) and
shared by every ``tests/advkit/report/test_*.py``.
"""

import pytest

from advkit import report, runs
from advkit.attack_runs import attack_run
from advkit.records import AttackSettings
from advkit.train import TrainConfig, train

LINF = [0.0, 0.1, 0.2]
L2 = [0.0, 0.5, 1.0]


def attack(run_dir, data, *, norm="linf", epsilons=LINF, **kw):
    if kw.get("attack", "pgd") == "pgd":
        kw.setdefault("steps", 3)
    settings = AttackSettings.make(norm=norm, epsilons=epsilons, limit=48, **kw)
    return attack_run(run_dir, settings, data=data, n_examples=6, figure=False)


@pytest.fixture(scope="package")
def run_root(tmp_path_factory, small_digits):
    """Three attacked runs (2 models x 2 optimizers), one unfinished run without attacks."""
    root = tmp_path_factory.mktemp("runs")
    for model, optimizer in [("mlp", "adam"), ("mlp", "sgd"), ("bncnn", "adam")]:
        out = root / f"{model}-{optimizer}"
        train(TrainConfig(model=model, optimizer=optimizer, epochs=2), out, dataset=small_digits)
        attack(out, small_digits)
        attack(out, small_digits, norm="l2", epsilons=L2)
    attack(root / "mlp-adam", small_digits, target="random")
    attack(root / "bncnn-adam", small_digits, attack="fgsm", epsilons=[0.0, 0.05, 0.15])
    unfinished = root / "mlp-momentum"
    train(
        TrainConfig(model="mlp", optimizer="momentum", epochs=2, warmup_epochs=1),
        unfinished,
        dataset=small_digits,
    )
    (unfinished / runs.SUMMARY).unlink()
    return root


@pytest.fixture(scope="package")
def built(run_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    calls = []
    result = report.build_report(
        [run_root], out, progress=lambda done, total, file: calls.append((done, total, file))
    )
    return out, result, calls


@pytest.fixture(scope="package")
def records(run_root):
    """Every attack record of the runs, by path."""
    return {p: runs.read_json(p) for p in sorted(run_root.glob("*/attacks/*.json"))}


@pytest.fixture(scope="package")
def attack_fn():
    """``attack(run_dir, data, *, norm, epsilons, **settings)``: a quick real attack."""
    return attack
