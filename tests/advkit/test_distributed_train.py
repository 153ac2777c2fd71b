"""``torchrun -m advkit train``: DistributedDataParallel training, resumable after a kill.

Every run is a subprocess with a timeout (2 gloo processes of 1 thread each
under ``torchrun --standalone``), so nothing can hang the suite; a stuck run
is killed with its whole process group.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advkit import runs
from advkit.train import TrainConfig, make_config_dict

ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = {runs.CONFIG, runs.WEIGHTS, runs.METRICS, runs.SUMMARY}
# What depends on the time taken, not on the training.
TIMED = ("seconds", "train_seconds", "threads")


def env() -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    e.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    e["ADVKIT_DIST_TIMEOUT"] = "120"  # every collective gives up after 2 minutes
    return e


def command(out, args, processes):
    advkit = ["-m", "advkit", "--threads", "1", "train", "--device", "cpu", "--out", str(out)]
    if processes == 1:
        return [sys.executable, *advkit, *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(processes), *advkit, *args]


def advkit_train(out, args, processes=2, timeout=300):
    """Run ``advkit train`` to its end; kill the process group if it takes too long."""
    proc = subprocess.Popen(
        command(out, args, processes), env=env(), cwd=ROOT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr


def rows(out):
    return [
        {k: v for k, v in r.items() if k not in TIMED}
        for r in runs.read_jsonl(out / "metrics.jsonl")
    ]


def files(out):
    return {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    args = ["--model", "mlp", "--epochs", "3"]
    advkit_train(tmp_path / "one", args, processes=1)
    stdout, stderr = advkit_train(tmp_path / "two", args, processes=2)
    assert stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert "x 2 processes" in stderr
    one, two = tmp_path / "one", tmp_path / "two"
    assert files(one) == files(two) == RUN_FILES
    s1, s2 = runs.read_json(one / runs.SUMMARY), runs.read_json(two / runs.SUMMARY)
    assert abs(s1["test_accuracy"] - s2["test_accuracy"]) <= 0.01
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    c1, c2 = runs.read_json(one / runs.CONFIG), runs.read_json(two / runs.CONFIG)
    assert (c1["training"]["world_size"], c2["training"]["world_size"]) == (1, 2)
    assert runs.config_hash(c1) == runs.config_hash(c2) == s2["config_hash"]
    assert len(rows(two)) == 3
    for a, b in zip(rows(one), rows(two), strict=True):
        assert b["epoch"] == a["epoch"] and b["lr"] == a["lr"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    # The weights are the plain model's (no "module." prefix of DDP).
    weights = runs.read_safetensors(two / runs.WEIGHTS)
    assert set(weights) == set(runs.read_safetensors(one / runs.WEIGHTS))


def kill_after_first_epoch(out, args, timeout=300):
    """Start a 2-process run and SIGKILL its whole process group once an epoch is saved."""
    proc = subprocess.Popen(
        command(out, args, 2), env=env(), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / runs.CHECKPOINT).exists():
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert (out / runs.CHECKPOINT).exists(), "no epoch was saved before the kill"
    assert not (out / runs.SUMMARY).exists(), "the run ended before it could be killed"


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_where_it_stopped(tmp_path):
    args = ["--model", "bncnn", "--epochs", "6", "--batch-size", "32"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    advkit_train(whole, args)
    kill_after_first_epoch(killed, args)
    done = len(runs.read_jsonl(killed / runs.METRICS))
    assert 1 <= done < 6
    advkit_train(killed, [*args, "--resume"])
    assert files(killed) == RUN_FILES  # the checkpoint is gone, every file is whole
    # Bit-identical to the uninterrupted run: same shards, same generators on every rank.
    assert rows(killed) == rows(whole)
    summary = runs.read_json(killed / runs.SUMMARY)
    assert summary["test_accuracy"] == runs.read_json(whole / runs.SUMMARY)["test_accuracy"]
    assert summary["epochs_completed"] == 6
    assert (
        runs.read_safetensors(killed / runs.WEIGHTS).keys()
        == runs.read_safetensors(whole / runs.WEIGHTS).keys()
    )


@pytest.mark.slow
def test_adversarial_training_under_two_processes(tmp_path):
    out = tmp_path / "pgd"
    args = ["--model", "mlp", "--epochs", "1", "--adversarial", "pgd", "--adv-eps", "0.1"]
    advkit_train(out, [*args, "--adv-steps", "3"])
    assert files(out) == RUN_FILES
    (row,) = runs.read_jsonl(out / runs.METRICS)
    assert 0 < row["val_robust_acc"] <= row["val_acc"]
    summary = runs.read_json(out / runs.SUMMARY)
    assert summary["adversarial"] == "pgd" and summary["world_size"] == 2
    assert summary["test_accuracy"] > 0.5


def test_amp_is_recorded_and_bf16_trains_on_cpu(tmp_path, small_digits):
    from advkit.train import train

    out = tmp_path / "bf16"
    summary = train(TrainConfig(model="mlp", epochs=1, amp="bf16"), out, dataset=small_digits)
    assert summary["test_accuracy"] > 0.3
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["training"]["amp"] == "bf16" and config["train_config"]["amp"] == "bf16"
    plain = make_config_dict(TrainConfig(model="mlp", epochs=1).resolved(), small_digits, "cpu")
    assert "amp" not in plain["training"]  # the hash of a run without AMP is unchanged
    assert runs.config_hash(plain) != runs.config_hash(config)


def test_bad_amp_is_refused(tmp_path, cli):
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16"):
        TrainConfig(amp="fp8").resolved()
    result = cli("train", "--amp", "fp8", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "fp8" in result.output
