"""Adversarial training: each mode buys robustness, the collapse guard fires, resume is exact."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from advkit import adversarial, load_run, runs
from advkit.train import TrainConfig, train

EPS = 0.15


def _robust(run_dir, data):
    model, _ = load_run(run_dir)
    return adversarial.robust_accuracy(
        model, data.x_test, data.y_test, eps=EPS, norm="linf", seed=0, steps=10
    )


@pytest.fixture(scope="module")
def standard(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("standard") / "run"
    train(TrainConfig(model="bncnn", epochs=4, batch_size=32), out, dataset=small_digits)
    return _robust(out, small_digits)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pgd", "fgsm-rs", "trades"])
def test_each_mode_lowers_the_adversarial_loss_and_raises_robust_accuracy(
    tmp_path, small_digits, standard, mode
):
    steps = {"pgd": 3, "trades": 3}.get(mode)
    config = TrainConfig(
        model="bncnn", epochs=4, batch_size=32, adversarial=mode, adv_eps=EPS, adv_steps=steps
    )
    summary = train(config, tmp_path / "r", dataset=small_digits)
    robust_acc, robust_loss = _robust(tmp_path / "r", small_digits)
    assert robust_acc > standard[0] + 0.1, (robust_acc, standard)
    assert robust_loss < standard[1]
    rows = runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert all(0 <= r["val_robust_acc"] <= r["val_acc"] + 1e-9 for r in rows)
    assert rows[-1]["val_robust_loss"] < rows[0]["val_robust_loss"]
    config_json = json.loads((tmp_path / "r" / "config.json").read_text())
    described = config_json["training"]["adversarial"]
    assert described["mode"] == mode and described["eps"] == EPS
    assert described["validation"]["attack"] == "pgd"
    assert summary["adversarial"] == mode and summary["catastrophic_overfitting"] is None


def test_standard_runs_keep_their_config_and_rows(tmp_path, small_digits):
    train(TrainConfig(model="mlp", epochs=1), tmp_path / "r", dataset=small_digits)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert "adversarial" not in config["training"]
    assert "val_robust_acc" not in runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")[0]


@pytest.mark.slow
def test_the_overfitting_guard_stops_a_collapsing_run_and_keeps_the_last_good_epoch(
    tmp_path, small_digits
):
    # Built to collapse: plain FGSM (no random start, a 2 eps step) while the
    # learning rate warms up to a rate far too large for SGD.
    config = TrainConfig(
        model="mlp", epochs=8, optimizer="sgd", lr=3.0, warmup_epochs=5, schedule="constant",
        batch_size=32, adversarial="fgsm-rs", adv_eps=EPS, adv_step_size=2 * EPS,
        adv_random_start=False,
    )  # fmt: skip
    summary = train(config, tmp_path / "r", dataset=small_digits)
    co = summary["catastrophic_overfitting"]
    assert co is not None and co["kept_epoch"] == co["epoch"] - 1 >= 1
    assert co["val_robust_acc"] < 0.5 * co["best_val_robust_acc"]
    rows = runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert len(rows) == co["epoch"] < 8 and summary["stopped_early"]
    kept = rows[co["kept_epoch"] - 1]
    model, _ = load_run(tmp_path / "r")
    acc, _ = adversarial.robust_accuracy(
        model, small_digits.x_val, small_digits.y_val, eps=EPS, norm="linf", seed=config.seed
    )
    assert acc == kept["val_robust_acc"] != rows[-1]["val_robust_acc"]
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_eps_ramps_up_linearly():
    assert [adversarial.eps_at(0.3, 2, e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert adversarial.eps_at(0.3, 0, 0) == 0.3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adversarial", "pgd"], "adv_eps"),
        (["--adv-eps", "0.1"], "adv_eps must be unset"),
        (["--adversarial", "fgsm-rs", "--adv-eps", "0.1", "--adv-steps", "3"], "adv_steps"),
        (["--adversarial", "pgd", "--adv-eps", "0.1", "--trades-beta", "2"], "trades_beta"),
        (["--adv-norm", "l2"], "--adv-norm"),
        (["--monitor", "val_robust_acc"], "monitor"),
        (["--adversarial", "pgd", "--adv-eps", "0.1", "--adv-eps-warmup", "3"], "adv_eps_warmup"),
    ],
)
def test_inconsistent_adversarial_options_are_refused(tmp_path, args, message, cli):
    result = cli("train", "--model", "mlp", "--epochs", "2", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def _train_cmd(out, epochs, *extra):
    return [
        sys.executable, "-m", "advkit", "train", "--model", "bncnn", "--epochs", str(epochs),
        "--batch-size", "32", "--device", "cpu", "--adversarial", "pgd", "--adv-eps", "0.1",
        "--adv-steps", "2", "--adv-eps-warmup", "1", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_pgd_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(_train_cmd(tmp_path / "full", 4), env=env, check=True, capture_output=True)

    proc = subprocess.Popen(_train_cmd(tmp_path / "cut", 4), env=env, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(runs.read_jsonl(metrics))
    assert 2 <= done < 4

    out = subprocess.run(
        _train_cmd(tmp_path / "cut", 4, "--resume"), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert f"resuming after epoch {done}" in out.stderr
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert (cut / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    timing = ("seconds", "train_seconds")
    strip = lambda p: [{k: v for k, v in r.items() if k not in timing} for r in runs.read_jsonl(p)]  # noqa: E731
    assert strip(cut / "metrics.jsonl") == strip(full / "metrics.jsonl")
    assert "val_robust_acc" in runs.read_jsonl(full / "metrics.jsonl")[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_rs_example_is_one_pgd_step_from_a_seeded_start_in_the_ball(small_digits, norm):
    import torch

    import attacks
    import models

    torch.manual_seed(0)
    model = models.build("bncnn", input_shape=(1, 8, 8), num_classes=10)
    x, y = small_digits.x_train[:48], small_digits.y_train[:48]
    eps, size = (0.1, 0.125) if norm == "linf" else (0.5, 0.625)

    def craft(random_start, seed=3):
        generator = torch.Generator().manual_seed(seed)
        return adversarial.fgsm_rs_example(
            model, x, y, eps, norm=norm, size=size, random_start=random_start,
            generator=generator,
        )  # fmt: skip

    model.train()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # Without a random start it is exactly PGD's single step (in eval mode).
    plain = attacks.pgd(model, x, y, eps, norm=norm, steps=1, step_size=size, random_start=False)
    assert torch.equal(craft(False), plain)
    started = craft(True)
    assert torch.equal(started, craft(True)) and not torch.equal(started, craft(True, seed=4))
    assert not torch.equal(started, plain)
    delta = (started - x).flatten(1)
    length = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (length <= eps + 1e-6).all() and started.min() >= 0 and started.max() <= 1
    # The model is left as found: train mode, trainable, weights and statistics unchanged.
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    # The random start raises the loss over the clean point, as an attack should.
    with torch.no_grad(), attacks.eval_mode(model):
        clean = torch.nn.functional.cross_entropy(model(x), y)
        adv = torch.nn.functional.cross_entropy(model(started), y)
    assert adv > clean
