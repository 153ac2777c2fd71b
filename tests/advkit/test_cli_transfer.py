"""`advkit transfer`: the homework's round trip on CIFAR-10 files, ensembles, bad input."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from advkit import load_run
from advkit.train import TrainConfig, train

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
CIFAR_CLASSES += ("dog", "frog", "horse", "ship", "truck")


def write_cifar10(root, per_batch=40, n_test=60):
    """Files in torchvision's CIFAR-10 python format; each class has its own mean colour."""
    rng = np.random.default_rng(0)
    colours = 128 + rng.integers(-10, 11, (10, 3))  # close: 8/255 can move them
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    test = None
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = np.arange(n) % 10
        noise = rng.integers(-40, 41, (n, 3, 32 * 32))
        data = np.clip(colours[labels][:, :, None] + noise, 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data.reshape(n, 3 * 32 * 32), "labels": labels.tolist()}, f)
        test = (data.reshape(n, 3, 32, 32), labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR_CLASSES)}, f)
    return test


@pytest.mark.slow
def test_cifar10_png_round_trip_keeps_accuracy_and_budget(tmp_path, monkeypatch, cli):
    import torchvision.datasets.cifar as cifar

    # torchvision checks the official files' MD5 sums before unpickling them; our
    # stand-ins in the same format cannot match, so only that check is skipped.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    clean, labels = write_cifar10(tmp_path / "data")
    for name, seed in (("mlp-a", 0), ("mlp-b", 1)):
        config = TrainConfig(model="mlp", dataset="cifar10", data_dir=str(tmp_path / "data"))
        train(config.__class__(**{**config.__dict__, "epochs": 1, "seed": seed}), tmp_path / name)
    png, out = tmp_path / "submission", tmp_path / "matrix.json"
    result = cli("transfer",
        "--source", tmp_path / "mlp-a", "--victim", tmp_path / "mlp-b", "--eps", "8/255",
        "--steps", "5", "--save-images", png, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["settings"]["epsilons"] == [8 / 255] and record["images"] == str(png)
    assert out.with_suffix(".png").exists() and "mlp-b" in result.stdout
    files = sorted(png.rglob("*.png"))
    assert len(files) == 60 and (png / "airplane" / "airplane0.png") in files
    # Read the files back here, independently of advkit's reader.
    x_png, index, classes = [], [], []
    for path in files:
        classes.append(CIFAR_CLASSES.index(path.parent.name))
        index.append(int(path.stem[len(path.parent.name) :]))
        x_png.append(np.asarray(Image.open(path)).transpose(2, 0, 1))
    x_png, index = np.stack(x_png).astype(int), np.array(index)
    assert (labels[index] == classes).all()
    # The budget in whole levels, on the rounded images: never more than 8.
    assert np.abs(x_png - clean[index].astype(int)).max() <= 8
    assert np.abs(x_png - clean[index].astype(int)).max() >= 7  # the attack used it
    victim, _ = load_run(tmp_path / "mlp-b")
    with torch.no_grad():
        x = torch.from_numpy(x_png).float() / 255
        png_correct = int((victim(x).argmax(1).numpy() == labels[index]).sum())
    # The record counts the files; in memory (before rounding) differs by rounding only.
    assert record["correct"][0][0][0] == png_correct
    assert abs(record["correct_float"][0][0][0] - png_correct) <= 3
    assert record["clean_correct"][0] > png_correct  # it transferred at all
    again = cli("transfer", "--from-images", png, "--victim", tmp_path / "mlp-b", "--eps", "8",
                   "--eps-unit", "255", "--out", tmp_path / "again.json")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again.json").read_text())["correct"] == record["correct"]
    tight = cli("transfer", "--from-images", png, "--victim", tmp_path / "mlp-b", "--eps", "4/255",
                   "--out", tmp_path / "tight.json")  # fmt: skip
    assert tight.exit_code == 2 and "over eps" in tight.output


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, small_digits):
    root = tmp_path_factory.mktemp("cli-transfer")
    train(TrainConfig(model="mlp", epochs=1), root / "mlp", dataset=small_digits)
    train(TrainConfig(model="mlp", epochs=1, seed=1), root / "mlp2", dataset=small_digits)
    train(TrainConfig(model="bncnn", epochs=1), root / "bncnn", dataset=small_digits)
    return root


def test_ensemble_source_and_matrix_table(runs_dir, tmp_path, cli):
    r = runs_dir
    result = cli("transfer",
        "--source", f"{r / 'mlp'},{r / 'bncnn'}", "--source", r / "mlp", "--victim", r / "mlp2",
        "--victim", r / "bncnn", "--eps", "0.1,0.2", "--steps", "2", "--decay", "0.5",
        "--limit", "24", "--out", tmp_path / "m.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["sources"] == ["mlp + bncnn", "mlp"] and record["victims"] == ["mlp2", "bncnn"]
    assert record["settings"]["options"]["decay"] == 0.5 and record["n_samples"] == 24
    assert len(record["accuracy"]) == 2 and len(record["intervals"][1][0]) == 2
    assert result.stdout.count("mlp + bncnn") == 2 and "eps=0.2 (51/255)" in result.stdout


def test_default_out_is_in_the_first_source_run(runs_dir, tmp_path, cli):
    run = tmp_path / "mlp"
    import shutil

    shutil.copytree(runs_dir / "mlp", run)
    result = cli("transfer", "--source", run, "--victim", runs_dir / "mlp2", "--attack", "fgsm",
                    "--eps", "4/255", "--limit", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    (path,) = (run / "transfers").glob("transfer-fgsm-*.json")
    assert path.with_suffix(".png").exists()
    assert json.loads(path.read_text())["settings"]["epsilons"] == [4 / 255]


@pytest.fixture(scope="module")
def other_shape_run(tmp_path_factory, small_digits):
    """A run on 2x-upsampled digits (16x16): another input shape than the digits runs."""
    from advkit.data import Dataset

    up = {
        f"{k}_{s}": (torch.nn.functional.interpolate(v, scale_factor=2) if k == "x" else v)
        for k in "xy"
        for s in ("train", "val", "test")
        for v in [getattr(small_digits, f"{k}_{s}")]
    }
    data = Dataset(name="digits", num_classes=10, **up)
    out = tmp_path_factory.mktemp("other") / "mlp16"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=data)
    return out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "8/0"], "not a list of numbers or fractions"),
        (["--eps", "0.2,0.1"], "strictly increasing"),
        (["--eps", "-1/255"], "strictly increasing"),
        (["--eps", "0.1", "--eps-unit", "0"], "--eps-unit"),
        (["--eps", "0.1", "--attack", "fgsm", "--steps", "3"], "--steps does not apply"),
        (["--eps", "0.1", "--diversity", "2"], "--diversity"),
        (["--eps", "0.1", "--translation", "2"], "translation"),
        (["--eps", "0.1,0.2", "--save-images", "SAVE"], "exactly one --source and one --eps"),
        (["--eps", "0.1", "--from-images", "RUNS"], "not both"),
        (["--eps", "0.1", "--out", "nowhere/x.json"], "does not exist"),
        (["--eps", "0.1", "--source", "missing-run"], "does not exist"),
    ],
)
def test_bad_input_is_one_error_line(runs_dir, tmp_path, args, message, cli, one_error_line):
    args = [str(tmp_path / "png") if a == "SAVE" else str(runs_dir) if a == "RUNS" else a
            for a in args]  # fmt: skip
    source = [] if "--source" in args else ["--source", runs_dir / "mlp"]
    result = cli("transfer", *source, "--victim", runs_dir / "mlp2", "--limit", "4", *args)
    one_error_line(result, message)


def test_victim_of_another_input_shape_is_refused(runs_dir, other_shape_run, tmp_path, cli):
    result = cli("transfer", "--source", runs_dir / "mlp", "--victim", other_shape_run, "--eps", "0.1",
                    "--out", tmp_path / "x.json")  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: run") and "[1, 16, 16]" in line and "[1, 8, 8]" in line
