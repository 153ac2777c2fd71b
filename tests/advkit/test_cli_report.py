"""``advkit report`` through click's CliRunner, on a real (tiny) attacked run.

Bad input ends in one ``Error:`` line and exit status 2, never a traceback; an
interrupted or killed report never leaves a half-written file.
"""

import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

from advkit import runs
from advkit.attack_runs import attack_run
from advkit.records import AttackSettings
from advkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, small_digits):
    """runs/mlp-adam, trained one epoch and attacked once."""
    root = tmp_path_factory.mktemp("runs")
    out = root / "mlp-adam"
    train(TrainConfig(model="mlp", optimizer="adam", epochs=1), out, dataset=small_digits)
    settings = AttackSettings.make(epsilons=[0.0, 0.1, 0.2], steps=2, limit=32)
    attack_run(out, settings, data=small_digits, n_examples=4, figure=False)
    return root


def test_report_of_a_parent_directory(run_root, tmp_path, cli):
    result = cli("report", run_root, "--out", tmp_path / "report", "--eps-linf", "0.2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"report: {tmp_path / 'report' / 'index.html'}")
    assert "1 runs, 1 attack records" in lines[0]
    assert "L∞ acc at ε=0.2" in lines[1]
    record = runs.read_json(
        next((run_root / "mlp-adam" / "attacks").glob("pgd-linf-untargeted-????????.json"))
    )
    assert lines[2].split()[:3] == ["mlp-adam", "mlp", "adam"]
    assert f"{record['curve']['accuracy'][2]:.4f}" in lines[2]
    assert "Traceback" not in result.output
    for name in (
        "index.html",
        "summary.csv",
        "summary.md",
        "figures/comparison-digits-linf-untargeted.png",
    ):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_help_explains_the_command(cli):
    result = cli("report", "--help")
    assert result.exit_code == 0
    for word in ("RUN...", "--out", "--eps-linf", "--eps-l2", "index.html", "summary.csv"):
        assert word in result.stdout


def _not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    return [tmp_path / "notes"], "not a run directory"


def _corrupt_config(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{not json")
    return [tmp_path / "r"], "config.json is not valid JSON"


def _corrupt_record(tmp_path, run_root):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_bytes((run_root / "mlp-adam" / "config.json").read_bytes())
    (run / "attacks").mkdir()
    (run / "attacks" / "pgd-linf-untargeted.json").write_text('{"curve": [1, 2')
    return [run], "pgd-linf-untargeted.json is not valid JSON"


def _corrupt_examples(tmp_path, run_root):
    run = tmp_path / "r"
    (run / "attacks").mkdir(parents=True)
    (run / "config.json").write_bytes((run_root / "mlp-adam" / "config.json").read_bytes())
    # The record whole, its examples file cut short.
    record = next((run_root / "mlp-adam" / "attacks").glob("pgd-linf-untargeted-????????.json"))
    examples = record.with_name(record.stem + ".examples.safetensors")
    (run / "attacks" / record.name).write_bytes(record.read_bytes())
    (run / "attacks" / examples.name).write_bytes(examples.read_bytes()[:40])
    return [run], "not a valid safetensors file"


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp, root: ([tmp / "missing"], "does not exist"),
        lambda tmp, root: _not_a_run(tmp),
        lambda tmp, root: _corrupt_config(tmp),
        _corrupt_record,
        _corrupt_examples,
        lambda tmp, root: ([root / "mlp-adam" / "config.json"], "is a file"),
    ],
    ids=["missing", "not-a-run", "corrupt-config", "corrupt-record", "corrupt-examples", "file"],
)
def test_bad_input_is_one_error_line_and_exit_2(run_root, tmp_path, make, cli, one_error_line):
    args, message = make(tmp_path, run_root)
    one_error_line(cli("report", *args, "--out", tmp_path / "report"), message)
    assert not (tmp_path / "report").exists()


def test_out_that_is_a_run_or_a_file_is_refused(run_root, tmp_path, cli):
    (tmp_path / "file").write_text("x")
    for out, message in [
        (run_root / "mlp-adam", "is a run directory"),
        (tmp_path / "file", "not a directory"),
    ]:
        result = cli("report", run_root, "--out", out)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (run_root / "mlp-adam" / "index.html").exists()


def test_malformed_options_exit_2(cli):
    result = cli("report", "runs", "--out", "r", "--eps-l2", "-1")
    assert result.exit_code == 2 and "--eps-l2" in result.stderr
    result = cli("report", "--out", "r")
    assert result.exit_code == 2 and "RUN" in result.stderr


# --- bad example files: refused in one line, no pickle ever executed ---------------------


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, small_digits):
    """An MLP trained one epoch with two attack records (PGD L-inf, FGSM L2)."""
    out = tmp_path_factory.mktemp("attacked") / "mlp-adam"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    for attack, norm, eps in (("pgd", "linf", [0.0, 0.1, 0.2]), ("fgsm", "l2", [0.0, 0.5, 1.0])):
        steps = {"steps": 2} if attack == "pgd" else {}
        settings = AttackSettings.make(attack=attack, norm=norm, epsilons=eps, limit=48, **steps)
        attack_run(out, settings, data=small_digits, n_examples=4, figure=False)
    return out


def _refused(attacked, tmp_path, make, message, exploit, cli, one_error_line):
    run = shutil.copytree(attacked, tmp_path / "run")
    (examples,) = (run / "attacks").glob("pgd-linf-untargeted-*.examples.safetensors")
    examples.write_bytes(make(examples, exploit))
    result = cli("report", run, "--out", tmp_path / "report")
    one_error_line(result, message)
    assert examples.name in result.stderr
    assert not exploit.ran()
    assert not (tmp_path / "report").exists()


def test_report_refuses_bad_example_files_in_one_line(
    attacked, tmp_path, bad_file, exploit, cli, one_error_line
):
    _refused(attacked, tmp_path, *bad_file, exploit, cli, one_error_line)


def _gallery_of_wrong_shape(path, exploit):
    tensors = load_file(str(path))
    tensors["x"] = tensors["x"].flatten(1)  # (n, 64): not images
    save_file(tensors, str(path))
    return path.read_bytes()


def _gallery_without_tensors(path, exploit):
    save_file({"w": torch.zeros(2)}, str(path))
    return path.read_bytes()


@pytest.mark.parametrize(
    "make", [_gallery_of_wrong_shape, _gallery_without_tensors], ids=["wrong-shape", "foreign"]
)
def test_report_refuses_example_files_that_are_no_gallery_in_one_line(
    attacked, tmp_path, make, exploit, cli, one_error_line
):
    _refused(attacked, tmp_path, make, "is not a gallery file", exploit, cli, one_error_line)


# --- SIGINT and SIGKILL: never a half-written file ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, percent",
    [(signal.SIGINT, 30), (signal.SIGKILL, 50)],
    ids=["sigint-early", "sigkill-middle"],
)
def test_an_interrupted_report_leaves_only_complete_files(
    attacked, tmp_path, sig, percent, interrupt, only_complete_files, cli
):
    out = tmp_path / "report"
    code, terminal = interrupt.run(
        ["report", attacked, "--out", out], interrupt.at_progress("report", percent), sig, tmp_path
    )
    interrupt.assert_clean(code, terminal, sig)
    if out.exists():
        only_complete_files(out, killed=sig == signal.SIGKILL)
    if code != 0:
        assert not (out / "index.html").exists()  # written last, only when all else is

    again = cli("report", attacked, "--out", out)
    assert again.exit_code == 0, again.output
    only_complete_files(out, killed=sig == signal.SIGKILL)
    assert (out / "index.html").exists()
    only_complete_files(attacked, killed=False)
