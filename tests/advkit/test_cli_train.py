"""``advkit train`` and ``advkit models`` through click's CliRunner."""

import pytest
from click.testing import CliRunner

from advkit import runs
from advkit.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_writes_a_run_directory_and_a_summary(tmp_path):
    result = invoke(
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
    again = invoke(
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
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    epochs = [] if "--epochs" in args else ["--epochs", "1"]
    result = invoke("train", *args, *epochs, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_out_with_another_run_is_not_overwritten(tmp_path):
    assert (
        invoke("train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "r").exit_code == 0
    )
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    result = invoke("train", "--model", "bncnn", "--epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def test_help_explains_and_models_lists_sizes():
    result = invoke("train", "--help")
    assert (
        result.exit_code == 0 and "--warmup-epochs" in result.output and "--resume" in result.output
    )
    listing = invoke("models", "--input-shape", "3,32,32")
    assert listing.exit_code == 0
    for name in ("mlp", "bncnn", "attention"):
        assert name in listing.stdout
    assert invoke("models", "--input-shape", "3,32").exit_code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "constant", "--gamma", "0.5"], "gamma must be unset for schedule"),
        (["--schedule", "cosine", "--gamma", "0.5"], "gamma must be unset for schedule"),
        (["--warmup-epochs", "5", "--epochs", "2"], "warmup_epochs must be less than epochs"),
        (["--resume"], "there is no run to continue"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(tmp_path, args, message):
    epochs = [] if "--epochs" in args else ["--epochs", "1"]
    result = invoke("train", "--model", "mlp", *args, *epochs, "--out", tmp_path / "r")
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


def test_help_shows_ranges_and_defaults_from_the_tables():
    import models
    from advkit.train import DEFAULT_LR, default_epochs

    text = " ".join(invoke("train", "--help").output.split())
    assert "9223372036854775807" not in text and "x>=1" in text
    for optimizer, lr in DEFAULT_LR.items():
        assert f"{optimizer} {lr:g}" in text
    for model in models.available():
        assert f"{model} {default_epochs(model)}" in text


def test_os_errors_are_a_plain_sentence(tmp_path):
    (tmp_path / "file").write_text("x")
    result = invoke("train", "--model", "mlp", "--epochs", "1", "--out", tmp_path / "file" / "r")
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
