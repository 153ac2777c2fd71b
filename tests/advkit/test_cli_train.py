"""``advkit train`` and ``advkit models`` through click's CliRunner.

Every bad input (options, a user's .npz, a training checkpoint to resume) ends in one
``Error:`` line and exit status 2, never a traceback; a loss that diverges stops the
run with the epoch and batch, keeping the completed epochs.
"""

import json
import math
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import models
from advkit import load_run, runs
from advkit.train import Reporter, TrainConfig, train


def test_train_writes_a_run_directory_and_a_summary(tmp_path, cli):
    result = cli(
        "train", "--model", "mlp", "--epochs", "2", "--device", "cpu", "--out", tmp_path / "r"
    )
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "config.json",
        "model.safetensors",
        "metrics.jsonl",
        "summary.json",
    }
    config = runs.read_json(tmp_path / "r" / "config.json")
    assert config["optimizer"]["name"] == "adam" and config["versions"]["torch"]
    # A complete run resumed does nothing and keeps its files.
    again = cli(
        "train",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        tmp_path / "r",
        "--resume",
    )
    assert again.exit_code == 0 and len(runs.read_jsonl(tmp_path / "r" / "metrics.jsonl")) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet"], "--model"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--schedule", "linear"], "--schedule"),
        (["--dataset", "imagenet"], "--dataset"),
        (["--dataset", "missing.npz"], "does not exist"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-0.1"], "--lr"),
        (["--momentum", "0.5", "--optimizer", "adam"], "momentum"),
        (["--model-options", "{bad json"], "--model-options"),
        (["--model-options", '{"hidden": "x"}', "--model", "mlp"], "hidden"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message, cli, one_error_line):
    epochs = [] if "--epochs" in args else ["--epochs", "1"]
    one_error_line(cli("train", *args, *epochs, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_out_with_another_run_is_not_overwritten(tmp_path, cli):
    assert cli("train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "r").exit_code == 0
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    result = cli("train", "--model", "bncnn", "--epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def test_help_explains_and_models_lists_sizes(cli):
    result = cli("train", "--help")
    assert (
        result.exit_code == 0 and "--warmup-epochs" in result.output and "--resume" in result.output
    )
    listing = cli("models", "--input-shape", "3,32,32")
    assert listing.exit_code == 0
    for name in ("mlp", "bncnn", "attention"):
        assert name in listing.stdout
    assert cli("models", "--input-shape", "3,32").exit_code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "constant", "--gamma", "0.5"], "gamma must be unset for schedule"),
        (["--schedule", "cosine", "--gamma", "0.5"], "gamma must be unset for schedule"),
        (["--warmup-epochs", "5", "--epochs", "2"], "warmup_epochs must be less than epochs"),
        (["--resume"], "there is no run to continue"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(tmp_path, args, message, cli):
    epochs = [] if "--epochs" in args else ["--epochs", "1"]
    result = cli("train", "--model", "mlp", *args, *epochs, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


def test_gamma_of_the_schedules_that_use_it_is_accepted(tmp_path):
    from advkit.train import TrainConfig

    for schedule in ("step", "exponential"):
        assert TrainConfig(schedule=schedule, gamma=0.5, epochs=2).resolved().gamma == 0.5
    # A resolved config (gamma 1.0: no decay) resolves again unchanged.
    c = TrainConfig(schedule="cosine").resolved()
    assert c.resolved() == c


def test_help_shows_ranges_and_defaults_from_the_tables(cli):
    import models
    from advkit.train import DEFAULT_LR, default_epochs

    text = " ".join(cli("train", "--help").output.split())
    assert "9223372036854775807" not in text and "x>=1" in text
    for optimizer, lr in DEFAULT_LR.items():
        assert f"{optimizer} {lr:g}" in text
    for model in models.available():
        assert f"{model} {default_epochs(model)}" in text


def test_os_errors_are_a_plain_sentence(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    result = cli("train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "file" / "r")
    assert result.exit_code == 2
    assert "Errno" not in result.stderr
    assert f"cannot access {tmp_path / 'file'}" in result.stderr, result.stderr
    assert "Not a directory" in result.stderr or "exists" in result.stderr


class _Interrupt:
    """A reporter that presses Ctrl-C at a chosen point of training."""

    def __init__(self, when, epoch):
        self.when, self.epoch = when, epoch

    def start(self, config, out, resumed_epoch):
        pass

    def epoch_start(self, epoch, epochs, n_batches):
        if self.when == "start" and epoch == self.epoch:
            raise KeyboardInterrupt

    def batch_end(self, loss, acc):
        pass

    def epoch_end(self, row):
        if self.when == "end" and row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_the_interrupted_message_says_what_was_saved(tmp_path, small_digits):
    from advkit.cli.train import interrupted_message
    from advkit.train import TrainConfig, train

    assert "before anything was written" in interrupted_message(tmp_path / "none")
    config = TrainConfig(model="mlp", epochs=3)
    for name, when, epoch in (("first", "start", 1), ("second", "end", 2)):
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / name, dataset=small_digits, reporter=_Interrupt(when, epoch))
    first = interrupted_message(tmp_path / "first")
    assert "no epoch is saved" in first and "last completed epoch is saved" not in first
    assert "epoch 2 is saved" in interrupted_message(tmp_path / "second")


def test_a_diverging_first_epoch_does_not_claim_a_checkpoint(tmp_path, small_digits):
    from advkit.train import TrainConfig, TrainingDiverged, train

    config = TrainConfig(model="mlp", optimizer="sgd", lr=1e30, schedule="constant", epochs=2)
    with pytest.raises(TrainingDiverged) as e:
        train(config, tmp_path / "r", dataset=small_digits)
    assert "epoch 1," in str(e.value) and "(epoch 0)" not in str(e.value)
    assert "no epoch completed" in str(e.value)


@pytest.mark.slow
def test_a_closed_stdout_exits_quietly(tmp_path):
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes: `advkit models | head -c 0`
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "advkit", "models"], stdout=write, stderr=subprocess.PIPE,
            env=env, text=True,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == "", done.stderr


# --- resuming from a bad training checkpoint --------------------------------------------


class _StopAfterFirstEpoch(Reporter):
    def epoch_start(self, epoch, epochs, n_batches):
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def partial(tmp_path_factory, digits):
    """An MLP run (2 epochs on the full digits, as the CLI trains it) cut after epoch 1."""
    out = tmp_path_factory.mktemp("partial") / "mlp"
    with pytest.raises(KeyboardInterrupt):
        train(
            TrainConfig(model="mlp", epochs=2), out, dataset=digits, reporter=_StopAfterFirstEpoch()
        )
    assert (out / runs.CHECKPOINT).exists() and len(runs.read_jsonl(out / runs.METRICS)) == 1
    return out


def _resume(cli, out):
    return cli("train", "--model", "mlp", "--epochs", "2", "--out", out, "--resume")


def _checkpoint_with(path, *, tensors=None, metadata=None):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state = tensors(state) if tensors else state
    save_file(state, str(path), metadata=meta if metadata is None else metadata)
    return path.read_bytes()


def _bncnn_tensors(state):
    bncnn = models.build("bncnn", input_shape=(1, 8, 8), num_classes=10).state_dict()
    other = {k: v for k, v in state.items() if not k.startswith("model.")}
    return {**other, **{f"model.{k}": v.contiguous() for k, v in bncnn.items()}}


CHECKPOINTS = {
    "another-model": (
        lambda p, e: _checkpoint_with(p, tensors=_bncnn_tensors),
        "does not match the model",
    ),
    "no-metadata": (lambda p, e: _checkpoint_with(p, metadata={}), "not an advkit checkpoint"),
    "metadata-not-json": (
        lambda p, e: _checkpoint_with(p, metadata={"advkit": "{"}),
        "not an advkit checkpoint",
    ),
    "metadata-missing-keys": (
        lambda p, e: _checkpoint_with(p, metadata={"advkit": json.dumps({"extra": {}})}),
        "not an advkit checkpoint",
    ),
    "bad-rng-state": (
        lambda p, e: _checkpoint_with(
            p, tensors=lambda s: {**s, "rng.shuffle": torch.zeros(3, dtype=torch.uint8)}
        ),
        "rng.shuffle",
    ),
}


def _resume_refused(partial, tmp_path, make, message, exploit, cli, one_error_line):
    run = shutil.copytree(partial, tmp_path / "run")
    checkpoint = run / runs.CHECKPOINT
    checkpoint.write_bytes(make(checkpoint, exploit))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    one_error_line(_resume(cli, run), message)
    assert not exploit.ran()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_resume_refuses_a_checkpoint_that_is_no_safetensors_in_one_line(
    partial, tmp_path, bad_file, exploit, cli, one_error_line
):
    _resume_refused(partial, tmp_path, *bad_file, exploit, cli, one_error_line)


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_resume_refuses_a_bad_training_checkpoint_in_one_line(
    partial, tmp_path, case, exploit, cli, one_error_line
):
    _resume_refused(partial, tmp_path, *CHECKPOINTS[case], exploit, cli, one_error_line)


def test_resume_of_a_good_checkpoint_finishes_the_run(partial, tmp_path, cli):
    run = shutil.copytree(partial, tmp_path / "run")
    result = _resume(cli, run)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1" in result.stderr
    assert [r["epoch"] for r in runs.read_jsonl(run / runs.METRICS)] == [1, 2]
    assert not (run / runs.CHECKPOINT).exists()


# --- training that diverges ------------------------------------------------------------


def assert_error_after_logs(result, pattern):
    """Exit 2; the log lines of work already started, then exactly one ``Error:`` line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines[-1:], result.stderr
    assert re.search(pattern, lines[-1]), lines[-1]
    assert all(line.startswith(("training ", "epoch ")) for line in lines[:-1]), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def test_a_loss_that_diverges_at_once_stops_with_the_epoch_and_batch(tmp_path, cli):
    out = tmp_path / "r"
    args = ["--model", "mlp", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant"]
    result = cli("train", *args, "--epochs", "2", "--out", out)
    line = assert_error_after_logs(result, r"loss became (nan|inf) at epoch 1, batch \d+")
    assert "--lr" in line and result.stdout == ""
    # No epoch completed: nothing but the config and an empty metrics file, and no partial files.
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl"]
    assert runs.read_jsonl(out / runs.METRICS) == []
    assert runs.read_json(out / runs.CONFIG)["optimizer"]["lr"] == 1e30


def test_a_loss_that_diverges_later_keeps_the_completed_epochs(tmp_path, digits, cli):
    # SGD at lr 2 survives the first epoch; the warm-up doubles the rate, and it diverges.
    out = tmp_path / "r"
    args = ["--model", "mlp", "--optimizer", "sgd", "--lr", "6", "--schedule", "constant"]
    result = cli("train", *args, "--warmup-epochs", "2", "--epochs", "4", "--out", out)
    line = assert_error_after_logs(result, r"loss became (nan|inf) at epoch \d+, batch \d+")
    epoch = int(re.search(r"at epoch (\d+)", line).group(1))
    assert epoch >= 2, line
    rows = runs.read_jsonl(out / runs.METRICS)
    assert [r["epoch"] for r in rows] == list(range(1, epoch))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    model, _ = load_run(out)  # the weights of the last completed epoch, loadable and finite
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(model(digits.x_test[:16])).all()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# --- a user's bad .npz ------------------------------------------------------------------


def _nan_images(n=40):
    x = np.random.default_rng(1).random((n, 8, 8), dtype=np.float32)
    x[3, 2, 2] = np.nan
    return x


NPZ_CASES = {
    "nan-pixels": ({"x_train": _nan_images()}, "NaN or infinite pixels"),
    "inf-pixels": ({"x_test": np.full((12, 8, 8), np.inf, np.float32)}, "NaN or infinite"),
    "pixels-above-1": ({"x_test": np.full((12, 8, 8), 1.5, np.float32)}, "expected [0, 1]"),
    "negative-pixels": ({"x_test": np.full((12, 8, 8), -0.5, np.float32)}, "expected [0, 1]"),
    "fewer-labels": ({"y_train": np.arange(39) % 4}, "40 images but y_train has 39 labels"),
    "more-test-labels": ({"y_test": np.arange(13) % 4}, "12 images but y_test has 13 labels"),
    "empty-train": (
        {"x_train": np.zeros((0, 8, 8), np.float32), "y_train": np.zeros(0, np.int64)},
        "x_train is empty",
    ),
    "empty-test": (
        {"x_test": np.zeros((0, 8, 8), np.float32), "y_test": np.zeros(0, np.int64)},
        "x_test is empty",
    ),
    "one-train-image": (
        {"x_train": np.zeros((1, 8, 8), np.float32), "y_train": np.zeros(1, np.int64)},
        "at least 2 images",
    ),
    "negative-label": ({"y_train": np.arange(40) % 4 - 1}, "negative label"),
    "float-labels": ({"y_train": (np.arange(40) % 4).astype(float)}, "integer labels"),
    "flat-images": ({"x_train": np.zeros((40, 64), np.float32)}, "has shape (40, 64)"),
    "missing-array": ({"y_test": None}, "missing arrays ['y_test']"),
}


def _train_on(cli, data, out):
    return cli("train", "--model", "mlp", "--epochs", "1", "--dataset", data, "--out", out)


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_train_refuses_a_bad_npz_in_one_line(tmp_path, case, write_npz, cli, one_error_line):
    change, message = NPZ_CASES[case]
    data = write_npz(tmp_path / "data.npz", **change)
    one_error_line(_train_on(cli, data, tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


def test_train_never_unpickles_an_npz(tmp_path, exploit, write_npz, cli, one_error_line):
    data = write_npz(tmp_path / "data.npz", x_train=np.array([exploit], dtype=object))
    (tmp_path / "fake.npz").write_bytes(pickle.dumps(exploit))
    for path, message in (
        (data, "without unpickling"),
        (tmp_path / "fake.npz", "not a valid .npz"),
    ):
        one_error_line(_train_on(cli, path, tmp_path / "r"), message)
    assert not exploit.ran()
