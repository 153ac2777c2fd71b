"""``advkit report`` through click's CliRunner, on a real (tiny) attacked run."""

import pytest
from click.testing import CliRunner

from advkit import runs
from advkit.attack_runs import attack_run
from advkit.cli.report import report_command
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


def invoke(*args):
    return CliRunner().invoke(report_command, [str(a) for a in args])


def test_report_of_a_parent_directory(run_root, tmp_path):
    result = invoke(run_root, "--out", tmp_path / "report", "--eps-linf", "0.2")
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


def test_help_explains_the_command():
    result = invoke("--help")
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
def test_bad_input_is_one_error_line_and_exit_2(run_root, tmp_path, make):
    args, message = make(tmp_path, run_root)
    result = invoke(*args, "--out", tmp_path / "report")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "report").exists()


def test_out_that_is_a_run_or_a_file_is_refused(run_root, tmp_path):
    (tmp_path / "file").write_text("x")
    for out, message in [
        (run_root / "mlp-adam", "is a run directory"),
        (tmp_path / "file", "not a directory"),
    ]:
        result = invoke(run_root, "--out", out)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (run_root / "mlp-adam" / "index.html").exists()


def test_malformed_options_exit_2():
    result = invoke("runs", "--out", "r", "--eps-l2", "-1")
    assert result.exit_code == 2 and "--eps-l2" in result.stderr
    result = invoke("--out", "r")
    assert result.exit_code == 2 and "RUN" in result.stderr
