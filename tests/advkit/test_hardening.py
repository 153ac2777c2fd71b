"""Issue 5 hardening: bad checkpoints, diverging training, bad inputs, interruptions.

Every bad input ends in a ``ValueError`` (library) or one ``Error:`` line and exit
status 2 (CLI), never a traceback and never a wrong number; an interrupted or
killed command never leaves a half-written file behind.
"""

import fcntl
import json
import math
import os
import pickle
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import attacks
import models
from advkit import load_run, robustness_curve, runs
from advkit.attack_runs import attack_run
from advkit.cli import main
from advkit.cli.attack import parse_epsilons
from advkit.records import AttackSettings
from advkit.train import Reporter, TrainConfig, TrainingDiverged, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk and its CRC: the last 8 bytes of a whole PNG
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result, message):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output


def assert_error_after_logs(result, pattern):
    """Exit 2; the log lines of work already started, then exactly one ``Error:`` line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines[-1:], result.stderr
    assert re.search(pattern, lines[-1]), lines[-1]
    assert all(line.startswith(("training ", "epoch ")) for line in lines[:-1]), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


class Exploit:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    """An MLP trained one epoch (its config names the full digits)."""
    out = tmp_path_factory.mktemp("runs") / "mlp-adam"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, trained, small_digits):
    """The trained MLP with two attack records (PGD L-inf, FGSM L2), ready for a report."""
    root = tmp_path_factory.mktemp("attacked")
    out = shutil.copytree(trained, root / "mlp-adam")
    for attack, norm, eps in (("pgd", "linf", [0.0, 0.1, 0.2]), ("fgsm", "l2", [0.0, 0.5, 1.0])):
        steps = {"steps": 2} if attack == "pgd" else {}
        settings = AttackSettings.make(attack=attack, norm=norm, epsilons=eps, limit=48, **steps)
        attack_run(out, settings, data=small_digits, n_examples=4, figure=False)
    return out


# --- checkpoints through the CLI ---------------------------------------------------

BAD_FILES = {
    "not-safetensors": (lambda path, marker: b"no tensors in here", "not a valid safetensors"),
    "truncated": (lambda path, marker: path.read_bytes()[:200], "not a valid safetensors"),
    "pickle": (
        lambda path, marker: pickle.dumps({"x": Exploit(marker)}),
        "not a valid safetensors",
    ),
}


def _torch_save(path, marker):
    torch.save({"x": Exploit(marker)}, path)
    return path.read_bytes()


BAD_FILES["torch.save"] = (_torch_save, "not a valid safetensors")


def _another_model(path, marker):
    bncnn = models.build("bncnn", input_shape=(1, 8, 8), num_classes=10)
    save_file({k: v.contiguous() for k, v in bncnn.state_dict().items()}, str(path))
    return path.read_bytes()


@pytest.mark.parametrize("case", [*BAD_FILES, "another-model"])
def test_attack_refuses_bad_weights_in_one_line(trained, tmp_path, case):
    run = shutil.copytree(trained, tmp_path / "run")
    marker = tmp_path / "pickle-was-executed"
    weights = run / "model.safetensors"
    make, message = (
        (_another_model, "does not match the model") if case == "another-model" else BAD_FILES[case]
    )
    weights.write_bytes(make(weights, marker))
    assert_one_error_line(invoke("attack", run, "--limit", "8", "--steps", "1"), message)
    assert not marker.exists()
    assert not (run / "attacks").exists()


def _gallery_of_wrong_shape(path, marker):
    tensors = load_file(str(path))
    tensors["x"] = tensors["x"].flatten(1)  # (n, 64): not images
    save_file(tensors, str(path))
    return path.read_bytes()


def _gallery_without_tensors(path, marker):
    save_file({"w": torch.zeros(2)}, str(path))
    return path.read_bytes()


@pytest.mark.parametrize("case", [*BAD_FILES, "wrong-shape", "foreign-tensors"])
def test_report_refuses_bad_example_files_in_one_line(attacked, tmp_path, case):
    run = shutil.copytree(attacked, tmp_path / "run")
    marker = tmp_path / "pickle-was-executed"
    (examples,) = (run / "attacks").glob("pgd-linf-untargeted-*.examples.safetensors")
    make, message = {
        **BAD_FILES,
        "wrong-shape": (_gallery_of_wrong_shape, "is not a gallery file"),
        "foreign-tensors": (_gallery_without_tensors, "is not a gallery file"),
    }[case]
    examples.write_bytes(make(examples, marker))
    result = invoke("report", run, "--out", tmp_path / "report")
    assert_one_error_line(result, message)
    assert examples.name in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "report").exists()


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


def _resume(out):
    return invoke("train", "--model", "mlp", "--epochs", "2", "--out", out, "--resume")


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
    **BAD_FILES,
    "another-model": (
        lambda p, m: _checkpoint_with(p, tensors=_bncnn_tensors),
        "does not match the model",
    ),
    "no-metadata": (lambda p, m: _checkpoint_with(p, metadata={}), "not an advkit checkpoint"),
    "metadata-not-json": (
        lambda p, m: _checkpoint_with(p, metadata={"advkit": "{"}),
        "not an advkit checkpoint",
    ),
    "metadata-missing-keys": (
        lambda p, m: _checkpoint_with(p, metadata={"advkit": json.dumps({"extra": {}})}),
        "not an advkit checkpoint",
    ),
    "bad-rng-state": (
        lambda p, m: _checkpoint_with(
            p, tensors=lambda s: {**s, "rng.shuffle": torch.zeros(3, dtype=torch.uint8)}
        ),
        "rng.shuffle",
    ),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_resume_refuses_a_bad_training_checkpoint_in_one_line(partial, tmp_path, case):
    run = shutil.copytree(partial, tmp_path / "run")
    marker = tmp_path / "pickle-was-executed"
    checkpoint = run / runs.CHECKPOINT
    make, message = CHECKPOINTS[case]
    checkpoint.write_bytes(make(checkpoint, marker))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert_one_error_line(_resume(run), message)
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_resume_of_a_good_checkpoint_finishes_the_run(partial, tmp_path):
    run = shutil.copytree(partial, tmp_path / "run")
    result = _resume(run)
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1" in result.stderr
    assert [r["epoch"] for r in runs.read_jsonl(run / runs.METRICS)] == [1, 2]
    assert not (run / runs.CHECKPOINT).exists()


# --- training that diverges ------------------------------------------------------------


def _no_temporary_files(directory):
    return not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_a_loss_that_diverges_at_once_stops_with_the_epoch_and_batch(tmp_path):
    out = tmp_path / "r"
    args = ["--model", "mlp", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant"]
    result = invoke("train", *args, "--epochs", "2", "--out", out)
    line = assert_error_after_logs(result, r"loss became (nan|inf) at epoch 1, batch \d+")
    assert "--lr" in line and result.stdout == ""
    # No epoch completed: nothing but the config and an empty metrics file, and no partial files.
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl"]
    assert runs.read_jsonl(out / runs.METRICS) == []
    assert runs.read_json(out / runs.CONFIG)["optimizer"]["lr"] == 1e30


def test_a_loss_that_diverges_later_keeps_the_completed_epochs(tmp_path, digits):
    # SGD at lr 2 survives the first epoch; the warm-up doubles the rate, and it diverges.
    out = tmp_path / "r"
    args = ["--model", "mlp", "--optimizer", "sgd", "--lr", "6", "--schedule", "constant"]
    result = invoke("train", *args, "--warmup-epochs", "2", "--epochs", "4", "--out", out)
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
    assert _no_temporary_files(out)


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


# --- bad data: the library raises ValueError, never returns a number --------------------


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))


X = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _with(value, index=(0, 0, 1, 1)):
    x = X.clone()
    x[index] = value
    return x


BAD_INPUTS = {
    "nan-pixel": (lambda: (_with(math.nan), Y), {}, "x must"),
    "inf-pixel": (lambda: (_with(math.inf), Y), {}, "x must"),
    "above-clip": (lambda: (_with(1.5), Y), {}, "clip"),
    "below-clip": (lambda: (_with(-0.01), Y), {}, "clip"),
    "outside-a-given-clip": (lambda: (X, Y), {"clip": (0.25, 0.75)}, "clip"),
    "nan-pixel-no-clip": (lambda: (_with(math.nan), Y), {"clip": None}, "x must"),
    "too-few-labels": (lambda: (X, Y[:5]), {}, "y must"),
    "too-many-labels": (lambda: (X, torch.cat([Y, Y])), {}, "y must"),
    "float-labels": (lambda: (X, Y.float()), {}, "y must"),
    "label-beyond-k": (lambda: (X, Y + 3), {}, "y must"),
}


@pytest.mark.parametrize("epsilons", [[0.0], [0.0, 0.1]], ids=["eps-0-only", "eps-0-and-0.1"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_robustness_curve_refuses_bad_data(net, case, attack, epsilons):
    make, kw, message = BAD_INPUTS[case]
    x, y = make()
    with pytest.raises(ValueError, match=message):
        robustness_curve(net, x, y, epsilons, attack=attack, **kw)


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
@pytest.mark.parametrize(
    "case",
    [c for c in BAD_INPUTS if c != "nan-pixel-no-clip"],  # see test below
)
def test_attacks_refuse_bad_data(net, case, attack):
    make, kw, message = BAD_INPUTS[case]
    x, y = make()
    with pytest.raises(ValueError, match=message):
        getattr(attacks, attack)(net, x, y, 0.1, **kw)


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attacks_refuse_non_finite_inputs_without_clip(net, attack):
    with pytest.raises(ValueError, match="x"):
        getattr(attacks, attack)(net, _with(math.nan), Y, 0.1, clip=None)


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_a_huge_finite_l2_budget_is_refused_not_turned_into_nan(net, attack):
    # Budgets this large overflow float32 norms; the attack says so instead of returning NaN.
    x = torch.full_like(X, 0.5)
    with pytest.raises(ValueError, match="eps must be at most"):
        getattr(attacks, attack)(net, x, Y, 3e38, norm="l2")
    x_adv = getattr(attacks, attack)(net, x, Y, 1e6, norm="l2")
    assert not x_adv.isnan().any()


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_an_eps_beyond_float32_is_a_value_error(net, attack):
    with pytest.raises(ValueError, match="eps"):
        getattr(attacks, attack)(net, X, Y, 1e39)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"target": torch.tensor([1, 2, 0, 1, 2])}, "target"),  # one label short
        ({"target": Y}, "target must differ from y"),
    ],
)
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attacks_refuse_bad_targets(net, attack, kw, message):
    with pytest.raises(ValueError, match=message):
        getattr(attacks, attack)(net, X, Y, 0.1, **kw)


@pytest.mark.parametrize(
    "args, kw, message",
    [
        ((X[:0], Y[:0]), {}, "N >= 1"),  # an empty data set
        ((X, Y), {"target": 0, "epsilons": [0.0]}, None),  # fine: some samples are left
        ((X[Y == 0], Y[Y == 0]), {"target": 0}, "leaves no sample"),
        ((X, Y), {"epsilons": [0.0, 1e30]}, "epsilons must be at most"),
        ((X, Y), {"step_size": 1e30}, "step_size must be at most"),
        ((X, Y), {"seed": 2**70}, "seed"),
        ((X, Y), {"target": 2**70}, "target"),
        ((X, Y), {"epsilons": [0.0], "clip": (1.0, 0.0)}, "clip"),
    ],
    ids=[
        "empty",
        "target-ok",
        "target-is-every-label",
        "huge-eps",
        "huge-step",
        "huge-seed",
        "huge-target",
        "bad-clip",
    ],
)
def test_robustness_curve_refuses_bad_arguments(net, args, kw, message):
    kw = {"epsilons": [0.0, 0.1], **kw}
    if message is None:
        assert robustness_curve(net, *args, **kw).n_excluded == int((Y == 0).sum())
        return
    with pytest.raises(ValueError, match=message):
        robustness_curve(net, *args, **kw)


# --- bad data through the CLI: a user's .npz --------------------------------------------


def _npz(path, **change):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((40, 8, 8), dtype=np.float32),
        "y_train": np.arange(40) % 4,
        "x_test": rng.random((12, 8, 8), dtype=np.float32),
        "y_test": np.arange(12) % 4,
    }
    arrays.update(change)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


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


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_train_refuses_a_bad_npz_in_one_line(tmp_path, case):
    change, message = NPZ_CASES[case]
    data = _npz(tmp_path / "data.npz", **change)
    result = invoke(
        "train", "--model", "mlp", "--epochs", "1", "--dataset", data, "--out", tmp_path / "r"
    )
    assert_one_error_line(result, message)
    assert not (tmp_path / "r").exists()


def test_train_never_unpickles_an_npz(tmp_path):
    marker = tmp_path / "pickle-was-executed"
    bad = np.array([Exploit(marker)], dtype=object)
    data = _npz(tmp_path / "data.npz", x_train=bad)
    (tmp_path / "fake.npz").write_bytes(pickle.dumps(Exploit(marker)))
    for path, message in (
        (data, "without unpickling"),
        (tmp_path / "fake.npz", "not a valid .npz"),
    ):
        result = invoke(
            "train", "--model", "mlp", "--epochs", "1", "--dataset", path, "--out", tmp_path / "r"
        )
        assert_one_error_line(result, message)
    assert not marker.exists()


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """A run trained by the CLI on a tiny .npz (4 classes of 8x8 images)."""
    root = tmp_path_factory.mktemp("npz")
    data = _npz(root / "data.npz")
    result = invoke(
        "train", "--model", "mlp", "--epochs", "1", "--dataset", data, "--out", root / "run"
    )
    assert result.exit_code == 0, result.output
    return root / "run", data


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x_test": np.full((12, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
        ({"y_test": np.arange(11) % 4}, "12 images but y_test has 11 labels"),
        ({"x_test": np.zeros((12, 4, 4), np.float32)}, "x_train images are"),
        (
            {
                "x_train": np.zeros((40, 4, 4), np.float32),
                "x_test": np.zeros((12, 4, 4), np.float32),
            },
            "changed since training",  # the sha256 catches it before the shapes do
        ),
        ({"y_test": np.arange(12) % 4 + 4}, "y_test has labels 4..7 that y_train"),
    ],
    ids=["nan-test-images", "label-count", "shapes-differ", "other-image-size", "more-classes"],
)
def test_attack_refuses_a_dataset_changed_since_training(npz_run, tmp_path, change, message):
    trained_run, data = npz_run
    run = shutil.copytree(trained_run, tmp_path / "run")
    saved = data.read_bytes()
    try:
        _npz(data, **change)
        result = invoke("attack", run, "--limit", "8", "--steps", "1", "--eps", "0,0.1")
    finally:
        data.write_bytes(saved)
    assert_one_error_line(result, message)
    assert not (run / "attacks").exists()


def test_attack_on_the_unchanged_npz_works(npz_run, tmp_path):
    run = shutil.copytree(npz_run[0], tmp_path / "run")
    result = invoke(
        "attack", run, "--target", "3", "--limit", "8", "--steps", "1", "--eps", "0,0.1"
    )
    assert result.exit_code == 0, result.output
    (record,) = (run / "attacks").glob("pgd-linf-target-3-*.json")
    assert runs.read_json(record)["curve"]["n_samples"] > 0


# --- SIGINT and SIGKILL: never a half-written file ---------------------------------------


def run_and_signal(args, ready, sig, cwd):
    """Run ``advkit ARGS`` with stderr on a terminal (so it draws its progress bars) and
    send ``sig`` as soon as ``ready(stderr so far)`` is true.

    Returns ``(returncode, stderr)``.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "advkit", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=ENV,
        cwd=cwd,
    )
    os.close(slave)
    seen, sent = b"", False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.005)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the command has exited and closed the terminal
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
            if not sent and ready(seen.decode(errors="replace")):
                proc.send_signal(sig)
                sent = True
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert sent, "the command never showed the progress it was to be interrupted at"
    return proc.returncode, seen.decode(errors="replace")


def on_disk(path):
    """True once ``path`` exists."""
    return lambda text: path.exists()


def at_progress(label, percent):
    """True once the ``label`` progress bar shows at least ``percent``."""
    pattern = re.compile(re.escape(label) + r":\s+(\d+)%")
    return lambda text: any(int(p) >= percent for p in pattern.findall(text))


def messages(terminal_text):
    """The lines a user is left with on the terminal (progress bars redraw with \\r)."""
    text = terminal_text.replace("\r\n", "\n")
    lines = (line.split("\r")[-1].strip() for line in text.split("\n"))
    return [line for line in lines if line]


def assert_only_complete_files(directory, *, killed):
    """Every result is whole; temporary files only as hidden ``.NAME.*.tmp`` after SIGKILL."""
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            # Only SIGKILL can skip the cleanup, and its leftovers are hidden and named so
            # that no glob for results (*.json, *.png, *.safetensors) picks them up.
            assert killed and path.name.startswith("."), path
            continue
        assert not path.name.startswith("."), path
        if path.suffix in (".json", ".jsonl"):
            runs.read_jsonl(path) if path.suffix == ".jsonl" else runs.read_json(path)
        elif path.suffix == ".png":
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END), path
        elif path.suffix == ".safetensors":
            runs.read_safetensors(path)
        elif path.suffix == ".html":
            assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), path
        elif path.suffix in (".csv", ".md"):
            assert path.read_text(encoding="utf-8").endswith("\n"), path


ATTACK = ["--steps", "30", "--eps", "0:0.3:7"]
# The record's name follows from its settings (advkit.records): those of ATTACK.
STEM = AttackSettings.make(epsilons=parse_epsilons(None, None, "0:0.3:7"), steps=30).name
EXAMPLES = f"attacks/{STEM}.examples.safetensors"  # the first file the attack writes
# Python exits through SIGINT itself when it believes a KeyboardInterrupt went unhandled
# (an extension module ran code when it landed): a shell shows 130 either way.
INTERRUPTED = (130, -signal.SIGINT)


def assert_interrupted_cleanly(code, terminal, sig):
    """SIGINT: status 130 and one line, no traceback; SIGKILL: killed. Status 0 only when
    CPython swallowed the interrupt (below).

    CPython ignores a KeyboardInterrupt that lands in importlib's module-lock callback
    at the end of a first import: it prints "Exception ignored in: <function
    _get_module_lock...>" with a traceback, and the command carries on and finishes.
    Not ours to fix; the files must be complete all the same.
    """
    swallowed = "Exception ignored in: <function _get_module_lock" in terminal
    if not swallowed:
        assert "Traceback" not in terminal, terminal
    if code == 0:
        # Only CPython swallowing the interrupt may let the command finish; anything
        # else means the signal came too late and the test would check nothing.
        assert swallowed, f"the command finished before {sig!r} landed:\n{terminal}"
        return
    if sig == signal.SIGINT:
        assert code in INTERRUPTED, terminal
        assert len(messages(terminal)) == 1, messages(terminal)
    else:
        assert code == -signal.SIGKILL, terminal


@pytest.mark.parametrize(
    "sig, when",
    [
        (signal.SIGINT, "attacking"),  # while PGD attacks the first budget
        (signal.SIGINT, "writing"),  # the curve done: the figure and the record being written
        (signal.SIGKILL, "writing"),
    ],
    ids=["sigint-attacking", "sigint-writing", "sigkill-writing"],
)
def test_an_interrupted_attack_leaves_only_complete_files(trained, tmp_path, sig, when):
    run = shutil.copytree(trained, tmp_path / "run")
    if when == "attacking":
        # 1 of 7 budgets done (eps 0: the clean pass): data loaded, PGD running.
        ready = at_progress("pgd linf", 14)
    else:
        ready = on_disk(run / EXAMPLES)
    code, terminal = run_and_signal(["attack", run, *ATTACK], ready, sig, tmp_path)
    assert_interrupted_cleanly(code, terminal, sig)
    if when == "attacking" and "Exception ignored" not in terminal:
        assert code in INTERRUPTED and not (run / "attacks" / f"{STEM}.json").exists()
    assert_only_complete_files(run, killed=sig == signal.SIGKILL)
    # The record comes last: when it is there, so are its examples and figure.
    record = run / "attacks" / f"{STEM}.json"
    if record.exists():
        assert (run / "figures" / f"{STEM}.png").exists()
        assert (run / EXAMPLES).exists()

    again = invoke("attack", run, *ATTACK)
    assert again.exit_code == 0, again.output
    assert_only_complete_files(run, killed=sig == signal.SIGKILL)
    assert runs.read_json(record)["settings"]["steps"] == 30


@pytest.mark.parametrize(
    "sig, percent",
    [(signal.SIGINT, 30), (signal.SIGKILL, 50)],
    ids=["sigint-early", "sigkill-middle"],
)
def test_an_interrupted_report_leaves_only_complete_files(attacked, tmp_path, sig, percent):
    out = tmp_path / "report"
    code, terminal = run_and_signal(
        ["report", attacked, "--out", out], at_progress("report", percent), sig, tmp_path
    )
    assert_interrupted_cleanly(code, terminal, sig)
    if out.exists():
        assert_only_complete_files(out, killed=sig == signal.SIGKILL)
    if code != 0:
        assert not (out / "index.html").exists()  # written last, only when all else is

    again = invoke("report", attacked, "--out", out)
    assert again.exit_code == 0, again.output
    assert_only_complete_files(out, killed=sig == signal.SIGKILL)
    assert (out / "index.html").exists()
    assert_only_complete_files(attacked, killed=False)
