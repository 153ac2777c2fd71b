"""Training: every optimizer and schedule trains, runs are reproducible and resumable."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import models
from advkit import load_run, runs
from advkit.train import OPTIMIZERS, SCHEDULES, TrainConfig, TrainingDiverged, make_scheduler, train


@pytest.mark.parametrize(
    "model",
    # The MLP in the fast suite; the larger models train for seconds each.
    [m if m == "mlp" else pytest.param(m, marks=pytest.mark.slow) for m in models.available()],
)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_and_schedule_lowers_the_loss(tmp_path, small_digits, model, optimizer):
    for schedule in SCHEDULES:
        config = TrainConfig(
            model=model, optimizer=optimizer, schedule=schedule, epochs=3, warmup_epochs=1
        )
        out = tmp_path / schedule
        train(config, out, dataset=small_digits)
        rows = runs.read_jsonl(out / "metrics.jsonl")
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert rows[-1]["train_loss"] < rows[0]["train_loss"], (schedule, rows)
        assert rows[-1]["val_loss"] < rows[0]["val_loss"] + 0.05, (schedule, rows)


def _lrs(schedule, warmup, epochs=8, **kw):
    c = TrainConfig(schedule=schedule, warmup_epochs=warmup, epochs=epochs, **kw).resolved()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=c.lr)
    sched = make_scheduler(c, opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_decay_shapes_the_learning_rate():
    lr = TrainConfig().resolved().lr
    warm = _lrs("cosine", warmup=3)
    assert warm[:4] == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr])  # linear warm-up
    assert all(a > b for a, b in zip(warm[3:], warm[4:], strict=False))  # then cosine decay
    assert _lrs("constant", 0) == pytest.approx([lr] * 8)
    assert _lrs("exponential", 0, gamma=0.5)[:3] == pytest.approx([lr, lr / 2, lr / 4])
    step = _lrs("step", 0, gamma=0.1)
    assert step[0] == step[1] == pytest.approx(lr) and step[2] == pytest.approx(lr / 10)


def test_same_seed_same_metrics_and_weights(tmp_path, small_digits):
    config = TrainConfig(model="bncnn", epochs=2, seed=3)
    for name in ("a", "b"):
        train(config, tmp_path / name, dataset=small_digits)
    strip = [
        {k: v for k, v in row.items() if k != "seconds"}
        for row in runs.read_jsonl(tmp_path / "a" / "metrics.jsonl")
    ]
    again = [
        {k: v for k, v in row.items() if k != "seconds"}
        for row in runs.read_jsonl(tmp_path / "b" / "metrics.jsonl")
    ]
    assert strip == again
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    other = TrainConfig(model="bncnn", epochs=2, seed=4)
    train(other, tmp_path / "c", dataset=small_digits)
    assert (tmp_path / "c" / "model.safetensors").read_bytes() != a


def test_training_leaves_the_global_random_state_alone(tmp_path, small_digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TrainConfig(model="mlp", epochs=1), tmp_path / "r", dataset=small_digits)
    assert torch.equal(torch.rand(3), expected)


def test_load_run_rebuilds_the_trained_model(tmp_path, small_digits):
    summary = train(TrainConfig(model="attention", epochs=2), tmp_path / "r", dataset=small_digits)
    model, config = load_run(tmp_path / "r")
    assert not model.training and config["model"]["name"] == "attention"
    with torch.no_grad():
        acc = (model(small_digits.x_test).argmax(1) == small_digits.y_test).float().mean().item()
    assert acc == pytest.approx(summary["test_accuracy"])
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()
    assert {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"} <= set(
        runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")[0]
    )


def test_early_stopping_keeps_the_best_validation_weights(tmp_path, small_digits):
    # A huge constant learning rate makes the validation loss stop improving quickly.
    config = TrainConfig(
        model="mlp", optimizer="sgd", lr=2.0, schedule="constant", epochs=30, patience=2
    )
    summary = train(config, tmp_path / "r", dataset=small_digits)
    rows = runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert summary["stopped_early"] and len(rows) < 30
    best = min(rows, key=lambda r: r["val_loss"])
    assert rows[-1]["epoch"] - best["epoch"] == 2
    model, _ = load_run(tmp_path / "r")
    with torch.no_grad():
        logits = model(small_digits.x_val)
    val_loss = torch.nn.functional.cross_entropy(logits, small_digits.y_val).item()
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-4)


def test_a_diverging_run_stops_and_keeps_the_last_good_epoch(tmp_path, small_digits):
    config = TrainConfig(model="mlp", optimizer="sgd", lr=1e30, schedule="constant", epochs=5)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch \d+"):
        train(config, tmp_path / "r", dataset=small_digits)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "r").iterdir())


def test_out_holding_another_run_is_refused_untouched(tmp_path, small_digits):
    train(TrainConfig(model="mlp", epochs=1), tmp_path / "r", dataset=small_digits)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(runs.RunError, match="already holds a run"):
        train(TrainConfig(model="mlp", epochs=2), tmp_path / "r", dataset=small_digits)
    with pytest.raises(runs.RunError, match="different settings"):
        train(TrainConfig(model="mlp", epochs=2), tmp_path / "r", resume=True, dataset=small_digits)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    train(TrainConfig(model="mlp", epochs=2), tmp_path / "r", force=True, dataset=small_digits)
    assert len(runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")) == 2


def _train_cmd(out, epochs, *extra):
    return [
        sys.executable,
        "-m",
        "advkit",
        "train",
        "--model",
        "bncnn",
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(_train_cmd(tmp_path / "full", 5), env=env, check=True, capture_output=True)

    proc = subprocess.Popen(_train_cmd(tmp_path / "cut", 5), env=env, stderr=subprocess.DEVNULL)
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
    assert 2 <= done < 5
    assert (tmp_path / "cut" / "checkpoint.safetensors").exists()

    out = subprocess.run(
        _train_cmd(tmp_path / "cut", 5, "--resume"), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert f"resuming after epoch {done}" in out.stderr
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert (cut / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_jsonl(p)]  # noqa: E731
    assert strip(cut / "metrics.jsonl") == strip(full / "metrics.jsonl")
    assert not [p.name for p in cut.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert json.loads((cut / "summary.json").read_text())["epochs_completed"] == 5


def _queued_cuda_seeding() -> list:
    """The CUDA seeding torch holds back until CUDA starts (its private queue)."""
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    calls = tracker.get_calls() if tracker is not None else []
    return [call[0] if call else None for call in calls]


def test_training_on_the_cpu_seeds_no_cuda_generator(tmp_path, small_digits):
    # torch.manual_seed seeds every CUDA device, beyond what fork_rng restores,
    # or queues that seeding until CUDA starts when it has not yet.
    initialized = torch.cuda.is_available() and torch.cuda.is_initialized()
    before = torch.cuda.get_rng_state_all() if initialized else None
    queued = _queued_cuda_seeding()
    train(TrainConfig(model="mlp", epochs=1, seed=7), tmp_path / "r", dataset=small_digits)
    assert _queued_cuda_seeding() == queued
    if initialized:
        after = torch.cuda.get_rng_state_all()
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_a_non_finite_validation_loss_stops_like_a_diverging_loss(
    tmp_path, small_digits, monkeypatch
):
    import advkit.train

    real = advkit.train.evaluate
    calls = []

    def inf_at_second_epoch(*args, **kwargs):
        calls.append(1)
        loss, acc = real(*args, **kwargs)
        return (math.inf, acc) if len(calls) == 2 else (loss, acc)

    monkeypatch.setattr(advkit.train, "evaluate", inf_at_second_epoch)
    out = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        train(TrainConfig(model="mlp", epochs=3), out, dataset=small_digits)
    assert len(runs.read_jsonl(out / runs.METRICS)) == 1
    assert runs.load_checkpoint(out / runs.CHECKPOINT)["extra"]["epoch"] == 1
