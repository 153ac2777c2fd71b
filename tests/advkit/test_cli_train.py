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
