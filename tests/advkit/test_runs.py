"""Run directories: atomic writes, and every kind of bad weights file refused cleanly."""

import os
import pickle

import pytest
import torch

from advkit import load_run, runs
from advkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "x.json"
    runs.write_json(target, {"a": 1})
    with pytest.raises(KeyboardInterrupt), runs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert runs.read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # ordinary permissions, not mkstemp's


def _broken_copy(run_dir, tmp_path, payload):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "model.safetensors").write_bytes(payload(broken / "model.safetensors"))
    return broken


CASES = {
    "not safetensors": lambda p: b"hello, this is not a weights file",
    "truncated": lambda p: p.read_bytes()[: len(p.read_bytes()) // 2],
    "empty": lambda p: b"",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_weights_are_refused_with_a_reason(run_dir, tmp_path, case):
    broken = _broken_copy(run_dir, tmp_path, CASES[case])
    with pytest.raises(runs.RunError, match="not a valid safetensors file"):
        load_run(broken)


def test_weights_of_another_model_are_refused(run_dir, tmp_path):
    from safetensors.torch import save_file

    broken = _broken_copy(run_dir, tmp_path, lambda p: b"")
    save_file({"w": torch.zeros(3)}, str(broken / "model.safetensors"))
    with pytest.raises(runs.RunError, match="does not match the model"):
        load_run(broken)


def test_a_pickle_is_never_executed(run_dir, tmp_path, exploit):
    broken = _broken_copy(run_dir, tmp_path, lambda p: pickle.dumps(exploit))
    torch.save({"x": exploit}, broken / "model.pt")
    with pytest.raises(runs.RunError):
        load_run(broken)
    assert not exploit.ran()


def test_missing_and_corrupt_run_directories(tmp_path, run_dir):
    with pytest.raises(runs.RunError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(runs.RunError, match="config.json does not exist"):
        load_run(tmp_path / "empty")
    broken = _broken_copy(run_dir, tmp_path, lambda p: p.read_bytes())
    (broken / "config.json").write_text("{not json")
    with pytest.raises(runs.RunError, match="not valid JSON"):
        load_run(broken)


def test_config_hash_ignores_device_and_versions(run_dir):
    config = runs.read_json(run_dir / "config.json")
    moved = {**config, "training": {**config["training"], "device": "cuda"}, "versions": {}}
    assert runs.config_hash(moved) == runs.config_hash(config)
    changed = {**config, "optimizer": {**config["optimizer"], "lr": 0.5}}
    assert runs.config_hash(changed) != runs.config_hash(config)


def test_no_temporary_files_are_left(run_dir):
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_permissions(tmp_path, umask):
    import torch.nn as nn

    old = os.umask(umask)  # the test's own process state, restored below
    try:
        runs.write_json(tmp_path / "a.json", {"a": 1})
        runs.save_weights(nn.Linear(2, 2), tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for name in ("a.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.slow
def test_importing_runs_leaves_the_umask_alone(tmp_path):
    import subprocess
    import sys

    code = (
        "import os\n"
        "calls = []\n"
        "real = os.umask\n"
        "os.umask = lambda m: calls.append(m) or real(m)\n"
        "import advkit.runs\n"
        "advkit.runs.write_json(os.path.join(os.environ['OUT'], 'x.json'), {})\n"
        "assert not calls, calls\n"
    )
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
