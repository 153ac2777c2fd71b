"""Property: whatever the options, every command succeeds or fails with one ``Error:`` line.

Hypothesis drives ``advkit train``, ``attack``, ``report`` and ``models`` in process
(click's CliRunner) with option values drawn from valid choices, invalid choices,
numbers of every kind (negative, zero, huge, NaN, infinite, not numbers at all)
and junk strings. Every invocation must exit 0, or exit 2 with exactly one
``Error:`` line that ends stderr (after at most the log lines of work already
started), never a traceback and never another status.

Runs are kept cheap: the attacked run is trained once, attacks see at most 8
samples and 3 steps, training is one or two epochs of small models on small data.
"""

import itertools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from advkit.attack_runs import attack_run
from advkit.cli import main
from advkit.records import AttackSettings
from advkit.train import TrainConfig, train

pytestmark = pytest.mark.slow  # hundreds of CLI runs

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Lines a command may log before it fails: training progress, report notes, warnings.
LOG_PREFIXES = ("training ", "epoch ", "note: ", "Warning: ")

# Junk without path separators, so a junk path stays inside the test's directory.
JUNK = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="/\\\x00", max_codepoint=0x2FF
    ),
    max_size=12,
)
BAD_NUMBERS = st.one_of(
    st.sampled_from(["0", "-0", "-1", "-0.5", "1e30", "1e39", str(2**64), str(-(2**63) - 1)]),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "0x10", "1_000"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    JUNK,
)


def mostly(valid, invalid, one_in=8):
    """``invalid`` one time in ``one_in``, else ``valid``: with a dozen options each
    sometimes bad, enough invocations still get past validation to do real work."""
    return st.integers(1, one_in).flatmap(lambda i: invalid if i == one_in else valid)


def numbers(*valid, one_in=8):
    """Valid values, else zero, negatives, huge numbers, non-finite or non-numbers."""
    return mostly(st.sampled_from([str(v) for v in valid]), BAD_NUMBERS, one_in)


def choice(valid, invalid=(), one_in=8):
    """A valid choice, else a wrong one or junk."""
    wrong = st.one_of(st.sampled_from(list(invalid)), JUNK) if invalid else JUNK
    return mostly(st.sampled_from(list(valid)), wrong, one_in)


def optional(option, values):
    """``[]`` (option left out) or ``[option, value]``."""
    return st.one_of(st.just([]), values.map(lambda v: [option, v]))


def options(*parts):
    """Concatenate optional options, in a drawn order."""

    def shuffled(lists):
        present = [x for x in lists if x]
        if not present:
            return st.just([])
        return st.permutations(present).map(lambda o: list(itertools.chain.from_iterable(o)))

    return st.tuples(*parts).flatmap(shuffled)


def assert_succeeds_or_fails_in_one_line(result, args):
    shown = f"advkit {' '.join(map(repr, args))}\n{result.output}"
    assert "Traceback" not in result.output, shown
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(shown) from result.exception
    assert result.exit_code in (0, 2), shown
    if result.exit_code == 0:
        return
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error:"), shown
    assert sum(line.startswith("Error:") for line in lines) == 1, shown
    assert all(line.startswith(LOG_PREFIXES) for line in lines[:-1]), shown


def run_cli(args):
    result = CliRunner().invoke(main, args)
    assert_succeeds_or_fails_in_one_line(result, args)
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics shows the mix
    return result


# --- fixtures: made once, shared by every example -----------------------------------


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A directory holding a run, a runs root, a tiny .npz, a bad .npz and a plain file."""
    base = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((24, 8, 8), dtype=np.float32),
        "y_train": np.arange(24) % 3,
        "x_test": rng.random((9, 8, 8), dtype=np.float32),
        "y_test": np.arange(9) % 3,
    }
    np.savez(base / "tiny.npz", **arrays)
    np.savez(base / "nan.npz", **{**arrays, "x_test": np.full((9, 8, 8), np.nan, np.float32)})
    (base / "file.txt").write_text("not a run")
    (base / "empty").mkdir()
    return base


def _attacked_run(out, data):
    train(TrainConfig(model="mlp", epochs=1), out, dataset=data)
    settings_ = AttackSettings.make(epsilons=[0.0, 0.1], steps=1, limit=8)
    attack_run(out, settings_, data=data, n_examples=2, figure=False)
    return out


@pytest.fixture(scope="module")
def run_dir(place, small_digits):
    """The run ``attack`` examples attack (they add records to it)."""
    return _attacked_run(place / "runs" / "mlp-adam", small_digits)


@pytest.fixture(scope="module")
def report_run(place, small_digits):
    """A run with one attack record, for ``report`` alone: each report stays a few figures."""
    return _attacked_run(place / "reported" / "mlp-adam", small_digits)


@pytest.fixture(scope="module")
def fresh(place):
    """Fresh, unique paths inside ``place`` (one per draw)."""
    counter = itertools.count()
    return lambda stem: str(place / f"{stem}-{next(counter)}")


@pytest.fixture(scope="module", autouse=True)
def inside(place):
    """Run every example in a scratch directory: relative junk paths land there."""
    scratch = place / "cwd"
    scratch.mkdir()
    before = os.getcwd()
    os.chdir(scratch)
    yield
    os.chdir(before)


# --- models ---------------------------------------------------------------------------

SHAPES = mostly(
    st.sampled_from(["1,8,8", "3,32,32", "1,28,28", "3,8,8", "1,1,1", "1,65536,65536", "1024,8,8"]),
    st.one_of(
        st.sampled_from(["0,8,8", "1,8", "1,8,8,8", "-1,8,8", "1,,8", "a,b,c", "1.5,8,8"]),
        st.lists(st.integers(-2, 40), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
        st.sampled_from([",".join([str(10**9)] * 3), "1025,8,8", "1,65537,8"]),
        JUNK,
    ),
    one_in=3,
)


@SETTINGS
@given(
    args=options(
        optional("--input-shape", SHAPES),
        optional("--num-classes", numbers(2, 10, 100, 10**12, 2**64, one_in=3)),
    )
)
def test_models_never_crashes(args):
    result = run_cli(["models", *args])
    if result.exit_code == 0:
        assert {"mlp", "bncnn", "attention"} <= {
            line.split()[0] for line in result.stdout.splitlines()
        }


# --- train ----------------------------------------------------------------------------

MODEL_OPTIONS = mostly(
    st.sampled_from(["{}", '{"dropout": 0.1}']),
    st.sampled_from(
        [
            '{"hidden": [-1]}',
            '{"hidden": [1000000000000]}',
            '{"hidden": [18446744073709551616]}',
            '{"dropout": 2}',
            '{"dropout": NaN}',
            '{"nope": 1}',
            '{"mean": [1, 2, 3, 4]}',
            "[1, 2]",
            "{bad json",
            "null",
            '"text"',
        ]
    ),
)


@st.composite
def train_args(draw, place, fresh):
    tiny = str(place / "tiny.npz")
    model = draw(choice(["mlp", "bncnn", "attention"], ["resnet", "MLP"]))
    dataset = draw(
        choice(
            ["digits", tiny],
            [str(place / "nan.npz"), str(place / "missing.npz"), "imagenet", "tiny.npz"],
        )
    )
    if dataset == "digits" and model != "mlp":
        dataset = tiny  # the larger models train on the tiny data: every example stays cheap
    out = draw(
        mostly(
            st.just(fresh("train")),
            st.sampled_from([str(place / "file.txt"), str(place / "empty"), "", str(place)]),
        )
    )
    args = ["--model", model, "--dataset", dataset, "--out", out]
    args += draw(
        options(
            optional("--model-options", MODEL_OPTIONS),
            optional("--optimizer", choice(["sgd", "momentum", "adam", "rmsprop"], ["lbfgs"])),
            optional("--lr", numbers(0.01, 0.1, 1e30, 1e39)),
            optional("--weight-decay", numbers(0, 1e-4, 1e39)),
            optional("--momentum", numbers(0, 0.5)),
            optional("--schedule", choice(["constant", "step", "exponential", "cosine"])),
            optional("--gamma", numbers(0.5, 1)),
            optional("--warmup-epochs", numbers(0, 1)),
            optional("--epochs", numbers(1, 2)),
            optional("--batch-size", numbers(16, 64, 2**70)),
            optional("--patience", numbers(1)),
            optional("--seed", numbers(0, 7)),
            optional("--device", choice(["cpu", "auto"], ["cuda", "mps", "tpu"])),
            st.sampled_from([[], ["--resume"], ["--force"], ["--resume", "--force"]]),
        )
    )
    # A valid, huge --epochs would train for hours; bound it (invalid values stay as drawn).
    return _bounded(args, "--epochs", 2)


def _count(text):
    """``text`` as click reads an int (``-1`` when it is not one)."""
    try:
        return int(text)
    except ValueError:
        return -1


def _bounded(args, option, limit):
    """Keep a valid ``option`` value at most ``limit`` (invalid values stay as drawn)."""
    for i, arg in enumerate(args[:-1]):
        if arg == option and _count(args[i + 1]) > limit:
            args[i + 1] = str(limit)
    return args


@SETTINGS
@given(data=st.data())
def test_train_never_crashes(place, fresh, data):
    args = data.draw(train_args(place, fresh))
    result = run_cli(["train", *args])
    if result.exit_code == 0:
        assert "test accuracy" in result.stdout


# --- attack ---------------------------------------------------------------------------

EPSILONS = mostly(
    st.sampled_from(["0,0.1", "0:0.2:3", "0.05", "0,0.5,1", "0:1:2", "0,1e18", "0:0.3:1000"]),
    st.one_of(
        st.sampled_from(["", ",", "0.1,0", "0,0.1,0.1", "-0.1", "nan", "0,inf", "0:0.3:1"]),
        st.sampled_from(["0:0.3:1000000000", "0:0.3:-3", "0,1e30", "0:nan:3", "1e400", "a,b"]),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4).map(
            lambda v: ",".join(map(repr, v))
        ),
        st.tuples(st.floats(-1, 2), st.floats(-1, 2), st.integers(-2, 5)).map(
            lambda t: f"{t[0]}:{t[1]}:{t[2]}"
        ),
        JUNK,
    ),
)
TARGETS = mostly(
    st.sampled_from(["none", "random", "least-likely", "0", "9"]),
    st.one_of(st.sampled_from(["10", "-1", "3.5", str(10**30), "Random"]), JUNK),
)


@st.composite
def attack_args(draw, place, run_dir, fresh):
    run = draw(
        mostly(
            st.just(str(run_dir)),
            st.sampled_from([str(place / "empty"), str(place / "file.txt"), str(place / "nope")]),
        )
    )
    args = [run, "--limit", draw(st.sampled_from(["8", "4", "1"]))]
    args += draw(
        options(
            optional("--attack", choice(["pgd", "fgsm"], ["cw", "PGD"])),
            optional("--norm", choice(["linf", "l2"], ["l1", "inf"])),
            optional("--eps", EPSILONS),
            optional("--steps", numbers(1, 3)),
            optional("--step-size", numbers(0.01, 0.5, 1e30)),
            optional("--restarts", numbers(1, 2)),
            st.sampled_from([[], ["--no-random-start"]]),
            optional("--target", TARGETS),
            optional("--loss", choice(["ce", "lecture", "margin"], ["hinge"])),
            optional("--split", choice(["test", "val"], ["train"])),
            optional("--limit", numbers(1, 8, 10**30)),
            optional("--batch-size", numbers(4, 256, 10**30)),
            optional("--seed", numbers(0, 3, -(2**63))),
            optional("--device", choice(["cpu", "auto"], ["cuda", "tpu"])),
            optional(
                "--out",
                mostly(
                    st.sampled_from(["-", fresh("curve") + ".json"]),
                    st.sampled_from([str(place / "empty"), "", ".", str(place / "file.txt/x")]),
                ),
            ),
        )
    )
    # Valid but slow settings are bounded: every successful attack stays cheap.
    for option, limit in (("--limit", 8), ("--steps", 3), ("--restarts", 2)):
        args = _bounded(args, option, limit)
    for i, arg in enumerate(args[:-1]):  # a range of up to 1000 budgets is valid, and slow
        if arg == "--eps" and 4 < _count(args[i + 1].split(":")[-1]) <= 1000:
            args[i + 1] = "0:0.3:4"
    return args


@SETTINGS
@given(data=st.data())
def test_attack_never_crashes(place, run_dir, fresh, data):
    args = data.draw(attack_args(place, run_dir, fresh))
    result = run_cli(["attack", *args])
    if result.exit_code == 0 and "--out" in args and args[args.index("--out") + 1] == "-":
        assert json.loads(result.stdout)["curve"]["n_samples"] >= 1


# --- report ---------------------------------------------------------------------------


@st.composite
def report_args(draw, place, run_dir, fresh):  # run_dir: the report's own run
    good = st.sampled_from([[str(run_dir)], [str(run_dir.parent)], [str(run_dir)] * 2])
    bad = st.lists(
        st.sampled_from(
            [
                str(place / "empty"),
                str(place / "file.txt"),
                str(place / "missing"),
                str(run_dir / "attacks"),
                str(run_dir),
            ]
        ),
        max_size=3,
    )
    dirs = draw(mostly(good, bad, one_in=3))
    out = draw(
        mostly(
            st.just(fresh("report")),
            st.sampled_from([str(run_dir), str(place / "file.txt"), "", None]),
            one_in=3,
        )
    )
    eps = numbers(0.1, 0.2, 0.5, 1.0, 1e300, one_in=3)
    args = dirs + ([] if out is None else ["--out", out])
    return args + draw(options(optional("--eps-linf", eps), optional("--eps-l2", eps)))


@settings(SETTINGS, max_examples=40)  # a successful report draws figures: ~1 s each
@given(data=st.data())
def test_report_never_crashes(place, report_run, fresh, data):
    args = data.draw(report_args(place, report_run, fresh))
    result = run_cli(["report", *args])
    if result.exit_code == 0:
        out = args[args.index("--out") + 1]
        assert (place / out / "index.html").is_file()


# --- the whole group --------------------------------------------------------------------


@SETTINGS
@given(
    args=st.lists(
        st.one_of(
            st.sampled_from(["train", "attack", "report", "models", "--help", "-h", "--version"]),
            st.sampled_from(["--out", "--eps", "--model", "--frobnicate", "-x", "--", "-"]),
            JUNK,
        ),
        max_size=3,
    )
)
def test_any_command_line_is_help_or_one_error_line(args):
    if (
        args[:1] in (["train"], ["attack"], ["report"])
        and "--help" not in args
        and "-h" not in args
    ):
        args = [args[0], "--frobnicate", *args[1:]]  # never start real work here
    result = run_cli(args)
    if not args:
        assert result.exit_code == 0 and "Commands:" in result.stdout  # plain `advkit`: the help
