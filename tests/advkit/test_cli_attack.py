"""``advkit attack`` through click's CliRunner, on a real (tiny) trained run.

Every bad input ends in one ``Error:`` line and exit status 2, never a traceback and
never a wrong number; an interrupted or killed attack never leaves a half-written file.
"""

import json
import pickle
import re
import shutil
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import models
from advkit import runs
from advkit.cli.attack import parse_epsilons
from advkit.records import AttackSettings
from advkit.train import TrainConfig, train

FAST = ["--limit", "40", "--steps", "3"]
EPSILONS = {"linf": [0.0, 0.1, 0.2], "l2": [0.0, 0.5, 1.0]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    """An MLP trained one epoch; tests attack copies of it."""
    out = tmp_path_factory.mktemp("runs") / "mlp-adam"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run (attacks write into it)."""
    return shutil.copytree(trained, tmp_path / "mlp-adam")


def record_file(run, prefix):
    """The one record whose name is `prefix` followed by its identity hash."""
    (path,) = [
        p
        for p in (run / "attacks").glob(f"{prefix}-*.json")
        if re.fullmatch(re.escape(prefix) + r"-[0-9a-f]{8}\.json", p.name)
    ]
    return path


@pytest.mark.parametrize("target", [None, "random"], ids=["untargeted", "target-random"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attack_writes_the_record_and_the_figure_and_prints_the_table(
    run, attack, norm, target, cli, whole_png
):
    eps = ",".join(map(str, EPSILONS[norm]))
    extra = [] if target is None else ["--target", target]
    fast = FAST if attack == "pgd" else FAST[:2]  # FGSM has no --steps
    result = cli("attack", run, "--attack", attack, "--norm", norm, "--eps", eps, *extra, *fast)
    assert result.exit_code == 0, result.output
    prefix = f"{attack}-{norm}-{'untargeted' if target is None else 'target-' + target}"
    path = record_file(run, prefix)
    name = path.stem
    record = runs.read_json(path)
    assert whole_png(run / "figures" / f"{name}.png")
    assert (run / "attacks" / f"{name}.examples.safetensors").is_file()

    settings, curve = record["settings"], record["curve"]
    assert (record["name"], record["run"], record["model"]) == (name, "mlp-adam", "mlp")
    assert (settings["attack"], settings["norm"], settings["target"]) == (attack, norm, target)
    assert settings["epsilons"] == curve["epsilons"] == EPSILONS[norm]
    assert settings["limit"] == 40 and curve["n_samples"] == 40 and curve["n_excluded"] == 0
    assert settings.get("steps") == (3 if attack == "pgd" else None)
    assert curve["accuracy"] == sorted(curve["accuracy"], reverse=True)
    assert curve["accuracy"][0] == curve["clean_accuracy"]
    for check, e in zip(curve["checks"][1:], EPSILONS[norm][1:], strict=True):
        assert check["max_norm"] <= e + 1e-6 and check["nan_count"] == 0

    # The table on stdout: a title line, a header, one row per eps with the record's numbers.
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"mlp-adam: {name}  (40 samples, clean accuracy")
    assert lines[1].split()[:2] == ["eps", f"({'L-inf' if norm == 'linf' else 'L2'})"]
    assert len(lines) == 3 + len(EPSILONS[norm])
    for line, e, acc, rate in zip(
        lines[2:-1], curve["epsilons"], curve["accuracy"], curve["success_rate"], strict=True
    ):
        cells = line.split()
        assert float(cells[0]) == e and cells[1:3] == [f"{acc:.4f}", f"{rate:.4f}"]
    # Then what the trust checks found: nothing here, and what 2 budgets cannot check.
    assert curve["flags"] == []
    assert lines[-1].startswith("trust checks: no warning (outputs are logits")
    assert "beyond this grid: a flat tail (needs 3 budgets > 0)" in lines[-1]
    assert ("the fall towards 0 at eps 0.5" in lines[-1]) == (norm == "linf")
    # Progress and the list of written files go to stderr, never into the results.
    assert "wrote" in result.stderr and "wrote" not in result.stdout
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0,0.1,0.2", [0.0, 0.1, 0.2]),
        ("0:0.3:4", [0.0, 0.1, 0.2, 0.3]),
        ("0:0.3:7", [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]),
        (" 0.05 , 0.1,", [0.05, 0.1]),
        ("0.25", [0.25]),
        ("1e-1,2e-1", [0.1, 0.2]),
    ],
)
def test_eps_lists_and_ranges_parse_to_the_budgets_given(value, expected):
    assert parse_epsilons(None, None, value) == expected


@pytest.mark.parametrize(
    "eps, expected", [("0,0.1,0.2", [0.0, 0.1, 0.2]), ("0:0.3:4", [0.0, 0.1, 0.2, 0.3])]
)
def test_out_dash_prints_the_record_as_json(run, eps, expected, cli):
    result = cli("attack", run, "--eps", eps, "--out", "-", *FAST)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert record["settings"]["epsilons"] == record["curve"]["epsilons"] == expected
    assert record == runs.read_json(record_file(run, "pgd-linf-untargeted"))


def test_out_file_gets_a_copy_of_the_record(run, tmp_path, cli):
    (tmp_path / "curves").mkdir()  # --out never creates directories (a typo would litter /)
    result = cli("attack", run, "--eps", "0,0.1", "--out", tmp_path / "curves" / "c.json", *FAST)
    assert result.exit_code == 0, result.output
    copy = runs.read_json(tmp_path / "curves" / "c.json")
    assert copy == runs.read_json(record_file(run, "pgd-linf-untargeted"))
    assert result.stdout.startswith("mlp-adam: pgd-linf-untargeted")


def test_a_class_target_leaves_that_class_out_and_says_how_many(run, digits, cli):
    result = cli("attack", run, "--target", "3", "--eps", "0,0.1", *FAST)
    assert result.exit_code == 0, result.output
    left_out = int((digits.y_test[:40] == 3).sum())
    assert left_out > 0
    path = record_file(run, "pgd-linf-target-3")
    record = runs.read_json(path)
    assert record["settings"]["target"] == 3
    assert record["curve"]["n_excluded"] == left_out
    assert record["curve"]["n_samples"] == 40 - left_out
    assert f"\n({left_out} samples of class 3 left out)\n" in result.stdout
    # Every sample of the gallery is pushed to class 3 and none of them is a 3.
    examples = load_file(str(path.with_name(path.stem + ".examples.safetensors")))
    assert (examples["target"] == 3).all() and (examples["y"] != 3).all()


def test_a_target_equal_to_every_label_leaves_nothing_to_attack(run, digits, cli, one_error_line):
    label = int(digits.y_test[0])
    result = cli("attack", run, "--target", label, "--limit", "1", "--eps", "0,0.1")
    one_error_line(result, "leaves no sample")
    assert not (run / "attacks").exists()


def test_help_names_every_option(cli):
    result = cli("attack", "--help")
    assert result.exit_code == 0
    for word in ("--attack", "--norm", "--eps", "--target", "--limit", "--steps", "--out", "RUN"):
        assert word in result.stdout


# --- bad runs: every one is refused before anything is written -----------------------


def _weights(run, payload):
    (run / "model.safetensors").write_bytes(payload)


def _foreign_tensors(run):
    save_file({"w": torch.zeros(3)}, str(run / "model.safetensors"))


def _reshaped_tensors(run):
    state = load_file(str(run / "model.safetensors"))
    state["head.weight"] = torch.zeros(3, 7)
    save_file(state, str(run / "model.safetensors"))


def _config(run, text):
    (run / "config.json").write_text(text)


def _model_entry(run, model):
    config = runs.read_json(run / "config.json")
    runs.write_json(run / "config.json", {**config, "model": model})


BAD_RUNS = {
    "missing-dir": (lambda run: shutil.rmtree(run), "does not exist"),
    "not-a-run": (lambda run: (run / "config.json").unlink(), "config.json does not exist"),
    "corrupt-config": (lambda run: _config(run, '{"model": {'), "is not valid JSON"),
    "config-not-an-object": (lambda run: _config(run, "[1, 2]"), "is not a run config"),
    "config-without-model": (lambda run: _model_entry(run, {}), "no valid 'model' entry"),
    "config-unknown-model": (
        lambda run: _model_entry(
            run, {"name": "resnet", "input_shape": [1, 8, 8], "num_classes": 10}
        ),
        "resnet",
    ),
    "missing-weights": (
        lambda run: (run / "model.safetensors").unlink(),
        "model.safetensors does not exist",
    ),
    "not-safetensors": (
        lambda run: _weights(run, b"these are not weights"),
        "not a valid safetensors file",
    ),
    "empty-weights": (lambda run: _weights(run, b""), "not a valid safetensors file"),
    "truncated-weights": (
        lambda run: _weights(run, (run / "model.safetensors").read_bytes()[:1000]),
        "not a valid safetensors file",
    ),
    "foreign-tensors": (_foreign_tensors, "does not match the model"),
    "reshaped-tensors": (_reshaped_tensors, "does not match the model"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_a_bad_run_is_one_error_line_and_exit_2(run, case, cli, one_error_line):
    damage, message = BAD_RUNS[case]
    damage(run)
    result = cli("attack", run, "--eps", "0,0.1", *FAST)
    one_error_line(result, message)
    assert not (run / "attacks").exists() and not (run / "figures").exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_posing_as_weights_is_never_executed(run, how, cli, one_error_line, exploit):
    if how == "pickle":
        (run / "model.safetensors").write_bytes(pickle.dumps({"w": exploit}))
    else:
        torch.save({"w": exploit}, run / "model.safetensors")
    result = cli("attack", run, "--eps", "0,0.1", *FAST)
    one_error_line(result, "not a valid safetensors file")
    assert not exploit.ran()
    assert not (run / "attacks").exists()


# --- bad options -----------------------------------------------------------------

BAD_OPTIONS = [
    (["--eps", "abc"], "--eps"),
    (["--eps", "0,0.1,x"], "--eps"),
    (["--eps", "0;0.1"], "--eps"),
    (["--eps", ""], "--eps"),
    (["--eps", ","], "--eps"),
    (["--eps", "-0.1"], "--eps"),
    (["--eps", "0,-0.1"], "--eps"),
    (["--eps", "0.2,0.1"], "--eps"),
    (["--eps", "0,0.1,0.1"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--eps", "0,NaN"], "--eps"),
    (["--eps", "inf"], "--eps"),
    (["--eps", "0,-inf"], "--eps"),
    (["--eps", "1e400"], "--eps"),
    (["--eps", "0:0.3:1"], "--eps"),
    (["--eps", "0:0.3:0"], "--eps"),
    (["--eps", "0:0.3:-2"], "--eps"),
    (["--eps", "0.3:0:4"], "--eps"),
    (["--eps", "0:0.3"], "--eps"),
    (["--eps", "0:0.3:4:5"], "--eps"),
    (["--eps", "0:nan:3"], "--eps"),
    (["--eps", "0:inf:3"], "--eps"),
    (["--eps", "0:0.3:2.5"], "--eps"),
    (["--eps", "0:0.3:1000000000"], "--eps"),  # would build a list of 10^9 floats
    (["--eps", "0,1e30"], "epsilons must be at most"),  # overflows float32 norms
    (["--step-size", "1e30"], "step_size must be at most"),
    (["--step-size", "0"], "--step-size"),
    (["--step-size", "-1"], "--step-size"),
    (["--step-size", "nan"], "step_size"),
    (["--target", "10"], "class index < K=10"),
    (["--target", "1000000000000000000000000"], "target"),
    (["--target", "-1"], "--target"),
    (["--target", "3.5"], "--target"),
    (["--target", "everyone"], "--target"),
    (["--limit", "0"], "--limit"),
    (["--limit", "-5"], "--limit"),
    (["--steps", "0"], "--steps"),
    (["--steps", "many"], "--steps"),
    (["--restarts", "0"], "--restarts"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "x"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--norm", "l1"], "--norm"),
    (["--norm", "LINF"], "--norm"),
    (["--loss", "hinge"], "--loss"),
    (["--attack", "cw"], "--attack"),
    (["--split", "train"], "--split"),
    (["--device", "tpu"], "--device"),
    (["--frobnicate"], "No such option"),
]


@pytest.mark.parametrize(
    "args, message", BAD_OPTIONS, ids=[" ".join(a) or "empty" for a, _ in BAD_OPTIONS]
)
def test_a_bad_option_is_one_error_line_and_exit_2(trained, args, message, cli, one_error_line):
    result = cli("attack", trained, "--eps", "0,0.1", *FAST, *args)
    one_error_line(result, message)
    assert not (trained / "attacks").exists()


def test_a_missing_run_argument_is_one_error_line(cli, one_error_line):
    one_error_line(cli("attack"), "Missing argument 'RUN'")


def test_an_option_the_attack_does_not_take_is_refused_not_ignored(run, cli):
    result = cli(
        "attack", run, "--attack", "fgsm", "--restarts", "3", "--eps", "0,0.1", "--limit", "8"
    )
    assert result.exit_code == 2
    assert "--restarts does not apply to --attack fgsm" in result.stderr
    assert "Traceback" not in result.output


def test_other_settings_write_another_record_and_same_settings_are_reused(run, cli):
    first = cli("attack", run, "--eps", "0,0.1", "--limit", "40", "--steps", "3")
    other = cli("attack", run, "--eps", "0,0.1", "--limit", "20", "--steps", "5")
    assert first.exit_code == other.exit_code == 0, first.output + other.output
    paths = sorted((run / "attacks").glob("pgd-linf-untargeted-*.json"))
    assert len(paths) == 2  # PGD-3 on 40 samples and PGD-5 on 20 side by side
    before = {p: p.read_text() for p in paths}
    again = cli("attack", run, "--eps", "0,0.1", "--limit", "40", "--steps", "3")
    assert again.exit_code == 0 and "already holds these settings" in again.stderr
    assert {p: p.read_text() for p in paths} == before  # nothing rewritten
    assert again.stdout == first.stdout
    forced = cli("attack", run, "--eps", "0,0.1", "--limit", "40", "--steps", "3", "--force")
    assert forced.exit_code == 0 and "wrote" in forced.stderr


def test_a_table_row_with_nothing_left_to_attack_says_so(run, cli):
    # The default method attacks the largest eps first and walks down only the samples it
    # broke: at 1e-4 PGD fools none, so 5e-5 has nothing left to attack.
    result = cli("attack", run, "--eps", "0,5e-05,0.0001", "--limit", "8", "--steps", "10")
    assert result.exit_code == 0, result.output
    (last,) = [line for line in result.stdout.splitlines() if line.split()[0] == "5e-05"]
    assert last.split()[3] == "-"
    assert "no sample was left to attack" in result.stdout


def test_out_into_a_missing_directory_is_refused(run, tmp_path, cli):
    result = cli(
        "attack", run, "--eps", "0,0.1", "--limit", "8", "--out", tmp_path / "no" / "x.json"
    )
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


# --- bad weights: refused in one line, no pickle ever executed ---------------------------


def _refused(trained, tmp_path, make, message, exploit, cli, one_error_line):
    run = shutil.copytree(trained, tmp_path / "run")
    weights = run / "model.safetensors"
    weights.write_bytes(make(weights, exploit))
    one_error_line(cli("attack", run, "--limit", "8", "--steps", "1"), message)
    assert not exploit.ran()
    assert not (run / "attacks").exists()


def test_attack_refuses_bad_weights_in_one_line(
    trained, tmp_path, bad_file, exploit, cli, one_error_line
):
    _refused(trained, tmp_path, *bad_file, exploit, cli, one_error_line)


def _another_model(path, exploit):
    bncnn = models.build("bncnn", input_shape=(1, 8, 8), num_classes=10)
    save_file({k: v.contiguous() for k, v in bncnn.state_dict().items()}, str(path))
    return path.read_bytes()


def test_attack_refuses_the_weights_of_another_model_in_one_line(
    trained, tmp_path, exploit, cli, one_error_line
):
    _refused(
        trained, tmp_path, _another_model, "does not match the model", exploit, cli, one_error_line
    )


# --- a user's .npz changed since training ------------------------------------------------


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory, write_npz, cli):
    """A run trained by the CLI on a tiny .npz (4 classes of 8x8 images)."""
    root = tmp_path_factory.mktemp("npz")
    data = write_npz(root / "data.npz")
    result = cli(
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
def test_attack_refuses_a_dataset_changed_since_training(
    npz_run, tmp_path, change, message, write_npz, cli, one_error_line
):
    trained_run, data = npz_run
    run = shutil.copytree(trained_run, tmp_path / "run")
    saved = data.read_bytes()
    try:
        write_npz(data, **change)
        result = cli("attack", run, "--limit", "8", "--steps", "1", "--eps", "0,0.1")
    finally:
        data.write_bytes(saved)
    one_error_line(result, message)
    assert not (run / "attacks").exists()


def test_attack_on_the_unchanged_npz_works(npz_run, tmp_path, cli):
    run = shutil.copytree(npz_run[0], tmp_path / "run")
    result = cli("attack", run, "--target", "3", "--limit", "8", "--steps", "1", "--eps", "0,0.1")
    assert result.exit_code == 0, result.output
    (record,) = (run / "attacks").glob("pgd-linf-target-3-*.json")
    assert runs.read_json(record)["curve"]["n_samples"] > 0


# --- SIGINT and SIGKILL: never a half-written file ---------------------------------------

ATTACK = ["--steps", "30", "--eps", "0:0.3:7"]
# The record's name follows from its settings (advkit.records): those of ATTACK.
STEM = AttackSettings.make(epsilons=parse_epsilons(None, None, "0:0.3:7"), steps=30).name
EXAMPLES = f"attacks/{STEM}.examples.safetensors"  # the first file the attack writes


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, when",
    [
        (signal.SIGINT, "attacking"),  # while PGD attacks the first budget
        (signal.SIGINT, "writing"),  # the curve done: the figure and the record being written
        (signal.SIGKILL, "writing"),
    ],
    ids=["sigint-attacking", "sigint-writing", "sigkill-writing"],
)
def test_an_interrupted_attack_leaves_only_complete_files(
    trained, tmp_path, sig, when, interrupt, only_complete_files, cli
):
    run = shutil.copytree(trained, tmp_path / "run")
    if when == "attacking":
        # The first batch of the first round done: data loaded, PGD running.
        ready = interrupt.at_progress("pgd linf", 5)
    else:
        ready = interrupt.on_disk(run / EXAMPLES)
    code, terminal = interrupt.run(["attack", run, *ATTACK], ready, sig, tmp_path)
    interrupt.assert_clean(code, terminal, sig)
    if when == "attacking" and "Exception ignored" not in terminal:
        assert code in interrupt.INTERRUPTED and not (run / "attacks" / f"{STEM}.json").exists()
    only_complete_files(run, killed=sig == signal.SIGKILL)
    # The record comes last: when it is there, so are its examples and figure.
    record = run / "attacks" / f"{STEM}.json"
    if record.exists():
        assert (run / "figures" / f"{STEM}.png").exists()
        assert (run / EXAMPLES).exists()

    again = cli("attack", run, *ATTACK)
    assert again.exit_code == 0, again.output
    only_complete_files(run, killed=sig == signal.SIGKILL)
    assert runs.read_json(record)["settings"]["steps"] == 30


def test_options_left_out_take_the_attacks_own_defaults(run, cli):
    # strong's first stage runs its own 100 APGD steps, not PGD's 10.
    result = cli(
        "attack", run, "--attack", "strong", "--eps", "0,0.1", "--limit", "8", "--out", "-"
    )
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    # None: the preset's (strength "default": 100 steps), not the CLI's.
    assert settings["steps"] is None and settings["strength"] == "default"
    typed = cli(
        "attack",
        run,
        "--attack",
        "strong",
        "--eps",
        "0,0.1",
        "--limit",
        "8",
        "--steps",
        "7",
        "--out",
        "-",
    )
    assert json.loads(typed.stdout)["settings"]["steps"] == 7


def test_a_negative_seed_is_refused(run, cli):
    result = cli("attack", run, "--seed", "-1", "--eps", "0,0.1", "--limit", "8")
    assert result.exit_code == 2 and "seed" in result.stderr


def test_strong_prints_what_each_stage_fooled_and_cost(run, cli):
    result = cli("attack", run, "--attack", "strong", "--eps", "0,0.1", "--limit", "8")
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("stages at eps 0.1")]
    assert "apgd-ce" in line and "passes" in line


def test_the_table_ends_with_the_flags_that_fired_instead(run, cli):
    from advkit.cli.attack import format_table
    from advkit.records import read_record

    result = cli("attack", run, "--eps", "0,0.1,0.2,0.3", *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "trust checks: no warning (outputs are logits, eval mode is deterministic, input "
        "gradients are non-zero, the curve keeps falling; beyond this grid: the fall towards "
        "0 at eps 0.5)"
    )
    record = read_record(record_file(run, "pgd-linf-untargeted"))
    record.curve.flags = [{"code": "zero-gradients", "message": "40% have zero gradients"}]
    lines = format_table(record).splitlines()
    assert lines[-1] == "! 40% have zero gradients"
    assert not any(line.startswith("trust checks") for line in lines)
