"""Provenance: config.json records the data's sha256 and path; attacking reloads and checks it."""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from advkit import runs
from advkit.data import DataError, load_dataset, load_run_dataset
from advkit.train import TrainConfig, train


def _npz(path, shift=0):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x[:12] + shift, y_test=y[:12])
    return path


@pytest.fixture
def npz_run(tmp_path, monkeypatch):
    """A run trained on data/d.npz, named by a path relative to the current directory."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    _npz(project / "data" / "d.npz")
    monkeypatch.chdir(project)
    train(TrainConfig(model="mlp", dataset="data/d.npz", epochs=1), "runs/r")
    return project


def test_config_records_the_sha256_and_absolute_path_of_the_npz(npz_run):
    entry = runs.read_json(npz_run / "runs/r/config.json")["dataset"]
    data_file = npz_run / "data" / "d.npz"
    assert entry["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert entry["path"] == str(data_file.resolve()) and os.path.isabs(entry["path"])
    assert entry["name"] == "data/d.npz"


def test_builtin_data_has_a_stable_hash():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.sha256 is not None and a.sha256 == b.sha256  # the data, not the split


def test_the_recorded_data_is_found_from_another_directory(npz_run, tmp_path, monkeypatch):
    config = runs.read_json(npz_run / "runs/r/config.json")
    monkeypatch.chdir(tmp_path)  # "data/d.npz" does not exist here: the absolute path does
    data = load_run_dataset(npz_run / "runs/r", config)
    assert data.sizes() == config["dataset"]["sizes"]


def test_a_project_moved_whole_finds_its_data_beside_the_run(npz_run, tmp_path, monkeypatch):
    moved = shutil.move(npz_run, tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    config = runs.read_json(f"{moved}/runs/r/config.json")
    data = load_run_dataset(f"{moved}/runs/r", config)
    assert data.path == str((tmp_path / "elsewhere" / "data" / "d.npz").resolve())


def test_missing_data_names_the_paths_tried_and_the_config(npz_run, tmp_path):
    config = runs.read_json(npz_run / "runs/r/config.json")
    moved = tmp_path / "moved.npz"
    shutil.move(npz_run / "data" / "d.npz", moved)
    with pytest.raises(DataError) as e:
        load_run_dataset(npz_run / "runs/r", config)
    message = str(e.value)
    assert "config.json" in message and config["dataset"]["path"] in message
    assert "data/d.npz" in message and "--dataset" in message
    # The file that moved, named explicitly, is accepted: it is the same data.
    assert load_run_dataset(npz_run / "runs/r", config, dataset=moved).path == str(moved)


def test_changed_data_is_refused_unless_allowed(npz_run):
    config = runs.read_json(npz_run / "runs/r/config.json")
    _npz(npz_run / "data" / "d.npz", shift=1)  # same shapes and labels, other pixels
    with pytest.raises(DataError, match=r"changed since training \(sha256 .*--allow-changed-data"):
        load_run_dataset(npz_run / "runs/r", config)
    with pytest.warns(UserWarning, match="changed since training"):
        data = load_run_dataset(npz_run / "runs/r", config, allow_changed=True)
    assert data.sha256 != config["dataset"]["sha256"]


def test_an_old_config_without_a_hash_is_accepted_with_a_warning(npz_run):
    config = runs.read_json(npz_run / "runs/r/config.json")
    for key in ("sha256", "path", "path_from_run"):
        del config["dataset"][key]
    with pytest.warns(UserWarning, match="records no sha256"):
        data = load_run_dataset(npz_run / "runs/r", config)
    assert data.num_classes == 4
    # Provenance is not part of the run's identity: old and new configs hash the same.
    new = runs.read_json(npz_run / "runs/r/config.json")
    assert runs.config_hash(config) == runs.config_hash(new)


def test_resuming_on_changed_data_is_refused(npz_run):
    out = npz_run / "runs/r"
    (out / "summary.json").unlink()  # pretend the run is unfinished
    _npz(npz_run / "data" / "d.npz", shift=1)
    with pytest.raises(runs.RunError, match="dataset .* changed"):
        train(TrainConfig(model="mlp", dataset="data/d.npz", epochs=1), out, resume=True)


def test_summary_records_the_thread_count(npz_run):
    import torch

    summary = runs.read_json(npz_run / "runs/r/summary.json")
    assert summary["threads"] == torch.get_num_threads() and summary["device"] == "cpu"
    rows = runs.read_jsonl(npz_run / "runs/r/metrics.jsonl")
    assert all(r["threads"] == torch.get_num_threads() for r in rows)


# --- the command line's process settings --------------------------------------

_HOOK = """
import builtins, os, sys
seen = []
real = builtins.__import__
def hook(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
    return real(name, *args, **kwargs)
builtins.__import__ = hook
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "start",
    [
        # the console script: pyproject's [project.scripts] advkit = "advkit.cli:main"
        "from importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='console_scripts') if e.name == 'advkit']\n"
        "assert ep.value == 'advkit.cli:main', ep.value\n"
        "import advkit.cli\n",
        # python -m advkit
        "import runpy\nsys.argv = ['advkit', '--version']\n"
        "try:\n    runpy.run_module('advkit', run_name='__main__')\nexcept SystemExit:\n    pass\n",
    ],
    ids=["console-script", "python-m"],
)
@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_the_command_sets_a_passive_openmp_wait_before_torch_loads(start, preset):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = _HOOK + start + "print('policy', seen[0])\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"policy {preset or 'PASSIVE'}" in done.stdout


@pytest.mark.slow
def test_importing_advkit_loads_no_torch_and_changes_no_environment():
    code = (
        "import os, sys\nbefore = dict(os.environ)\nimport advkit\n"
        "assert 'torch' not in sys.modules\nassert dict(os.environ) == before\n"
        "assert callable(advkit.load_run)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_threads_option_sets_torch_threads(cli):
    import torch

    before = torch.get_num_threads()
    try:
        result = cli("--threads", "3", "models")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    bad = cli("--threads", "0", "models")
    assert bad.exit_code == 2 and "--threads" in bad.stderr


def _attack(cli, *args):
    return cli("attack", *args, "--eps", "0,0.1", "--steps", "2")


def test_advkit_attack_from_another_directory_finds_and_checks_the_data(
    npz_run, tmp_path, monkeypatch, cli
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _attack(cli, npz_run / "runs/r")
    assert result.exit_code == 0, result.output
    (record,) = (npz_run / "runs/r/attacks").glob("pgd-linf-untargeted-*.json")
    assert runs.read_json(record)["curve"]["clean_accuracy"] == pytest.approx(
        runs.read_json(npz_run / "runs/r/summary.json")["test_accuracy"]
    )


def test_advkit_attack_refuses_changed_data_unless_allowed(npz_run, cli):
    _npz(npz_run / "data" / "d.npz", shift=128)  # the test images replaced in place
    refused = _attack(cli, "runs/r")
    assert refused.exit_code == 2 and "changed since training" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.output
    allowed = _attack(cli, "runs/r", "--allow-changed-data", "--force")
    assert allowed.exit_code == 0, allowed.output


def test_advkit_attack_dataset_points_a_run_at_moved_data(npz_run, tmp_path, cli):
    moved = tmp_path / "moved.npz"
    shutil.move(npz_run / "data" / "d.npz", moved)
    missing = _attack(cli, "runs/r")
    assert missing.exit_code == 2 and "--dataset" in missing.stderr
    found = _attack(cli, "runs/r", "--dataset", moved)
    assert found.exit_code == 0, found.output
