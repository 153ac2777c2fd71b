"""Shared test settings and helpers (as fixtures: tests run with --import-mode=importlib).

One torch thread: on this 2-core machine, OpenMP spin-waiting with two threads
made training steps ~100x slower whenever another process was busy
(see shared/BENCHMARKING.md). Child processes get OMP_WAIT_POLICY=PASSIVE.
"""

import fcntl
import math
import os
import pickle
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner, Result  # noqa: E402
from torch import nn  # noqa: E402

import models  # noqa: E402
from advkit import runs  # noqa: E402
from advkit.cli import main  # noqa: E402
from advkit.data import Dataset, load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """The bundled digits, split with seed 0 (the only real data in the suite)."""
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def small_digits(digits: Dataset) -> Dataset:
    """A 320-image slice of digits for tests that train many models."""
    return Dataset(
        name="digits",
        x_train=digits.x_train[:320],
        y_train=digits.y_train[:320],
        x_val=digits.x_val[:64],
        y_val=digits.y_val[:64],
        x_test=digits.x_test[:64],
        y_test=digits.y_test[:64],
        num_classes=10,
        # A slice of digits for speed: runs trained on it are attacked on digits itself.
        sha256=digits.sha256,
        path=digits.path,
    )


# --- the command line ------------------------------------------------------------------


def _invoke(*args: object) -> Result:
    """`advkit ARGS` in process through click's CliRunner (every argument as a string)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_error_line(result: Result, message: str) -> None:
    """Exit status 2 and one line, `Error: ...` holding `message`, on stderr; nothing on
    stdout and no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.fixture(scope="session")
def cli() -> Callable[..., Result]:
    """`cli("attack", run, "--eps", "0,0.1")` runs `advkit attack RUN --eps 0,0.1`."""
    return _invoke


@pytest.fixture(scope="session")
def one_error_line() -> Callable[[Result, str], None]:
    """`one_error_line(result, message)`: the command failed in one `Error:` line."""
    return _assert_one_error_line


# --- crafted pickles ---------------------------------------------------------------------


class Exploit:
    """Unpickling this creates `marker`: proof that a pickle was executed.

    Pickle it (`pickle.dumps`, `torch.save`, an object array in an .npz) into a file
    that a command must refuse, then check `ran()` is False.
    """

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))

    def ran(self) -> bool:
        return Path(self.marker).exists()


@pytest.fixture
def exploit(tmp_path: Path) -> Exploit:
    """An object whose unpickling leaves `tmp_path / "pickle-was-executed"` behind."""
    return Exploit(tmp_path / "pickle-was-executed")


# --- whole files -------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk and its CRC: the last 8 bytes of a whole PNG


def _is_whole_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)


def _assert_only_complete_files(directory: Path, *, killed: bool) -> None:
    """Every result is whole; temporary files only as hidden `.NAME.*.tmp` after SIGKILL."""
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
            assert _is_whole_png(path), path
        elif path.suffix == ".safetensors":
            runs.read_safetensors(path)
        elif path.suffix == ".html":
            assert path.read_text(encoding="utf-8").rstrip().endswith("</html>"), path
        elif path.suffix in (".csv", ".md"):
            assert path.read_text(encoding="utf-8").endswith("\n"), path


@pytest.fixture(scope="session")
def whole_png() -> Callable[[Path], bool]:
    """`whole_png(path)`: the file starts with the PNG signature and ends with IEND."""
    return _is_whole_png


@pytest.fixture(scope="session")
def only_complete_files() -> Callable[..., None]:
    """`only_complete_files(directory, killed=...)`: every file under it is whole."""
    return _assert_only_complete_files


# --- interrupting a command on a terminal ------------------------------------------------


class Interrupt:
    """Run `advkit` in a child process on a pseudo-terminal and signal it mid-way."""

    # Python exits through SIGINT itself when it believes a KeyboardInterrupt went
    # unhandled (an extension module ran code when it landed): a shell shows 130 either way.
    INTERRUPTED = (130, -signal.SIGINT)

    @staticmethod
    def run(args: list, ready: Callable[[str], bool], sig: int, cwd: Path) -> tuple[int, str]:
        """Run `advkit ARGS` with stderr on a terminal (so it draws its progress bars) and
        send `sig` as soon as `ready(stderr so far)` is true.

        Returns `(returncode, stderr)`.
        """
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "advkit", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=env,
            cwd=cwd,
            # A suite started in the background (`cmd &`) inherits SIGINT ignored, and
            # Python keeps an ignored SIGINT ignored: the child must see it as a user would.
            preexec_fn=_default_sigint,
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

    @staticmethod
    def on_disk(path: Path) -> Callable[[str], bool]:
        """True once `path` exists."""
        return lambda text: path.exists()

    @staticmethod
    def at_progress(label: str, percent: int) -> Callable[[str], bool]:
        """True once the `label` progress bar shows at least `percent`."""
        pattern = re.compile(re.escape(label) + r":\s+(\d+)%")
        return lambda text: any(int(p) >= percent for p in pattern.findall(text))

    @staticmethod
    def messages(terminal_text: str) -> list[str]:
        """The lines a user is left with on the terminal (progress bars redraw with \\r)."""
        text = terminal_text.replace("\r\n", "\n")
        lines = (line.split("\r")[-1].strip() for line in text.split("\n"))
        return [line for line in lines if line]

    @staticmethod
    def assert_clean(code: int, terminal: str, sig: int) -> None:
        """SIGINT: status 130 and one line, no traceback; SIGKILL: killed. Status 0 only
        when CPython swallowed the interrupt (below).

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
            assert code in Interrupt.INTERRUPTED, terminal
            assert len(Interrupt.messages(terminal)) == 1, Interrupt.messages(terminal)
        else:
            assert code == -signal.SIGKILL, terminal


@pytest.fixture(scope="session")
def interrupt() -> type[Interrupt]:
    """`interrupt.run(args, interrupt.at_progress("pgd linf", 14), signal.SIGINT, cwd)`,
    then `interrupt.assert_clean(code, terminal, sig)`."""
    return Interrupt


# --- bad data that every attack and robustness_curve refuse ------------------------------

_X = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
_Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _with(value: float, index: tuple = (0, 0, 1, 1)) -> torch.Tensor:
    x = _X.clone()
    x[index] = value
    return x


BAD_DATA = {
    "nan-pixel": (lambda: (_with(math.nan), _Y), {}, "x must"),
    "inf-pixel": (lambda: (_with(math.inf), _Y), {}, "x must"),
    "above-clip": (lambda: (_with(1.5), _Y), {}, "clip"),
    "below-clip": (lambda: (_with(-0.01), _Y), {}, "clip"),
    "outside-a-given-clip": (lambda: (_X, _Y), {"clip": (0.25, 0.75)}, "clip"),
    "nan-pixel-no-clip": (lambda: (_with(math.nan), _Y), {"clip": None}, "x must"),
    "too-few-labels": (lambda: (_X, _Y[:5]), {}, "y must"),
    "too-many-labels": (lambda: (_X, torch.cat([_Y, _Y])), {}, "y must"),
    "float-labels": (lambda: (_X, _Y.float()), {}, "y must"),
    "label-beyond-k": (lambda: (_X, _Y + 3), {}, "y must"),
}


@pytest.fixture(scope="session")
def tiny_net() -> nn.Module:
    """`Flatten, Linear(16, 3)` for `(N, 1, 4, 4)` inputs, seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.fixture(scope="session")
def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    """6 inputs `(6, 1, 4, 4)` in `[0, 1]` and labels 0, 1, 2, 0, 1, 2 (do not modify)."""
    return _X, _Y


@pytest.fixture(params=list(BAD_DATA))
def bad_data(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor, dict, str]:
    """Each kind of bad input for `tiny_net`: `(x, y, options, message)`, where `message`
    is what the `ValueError` says."""
    make, options, message = BAD_DATA[request.param]
    x, y = make()
    return x, y, options, message


# --- files that are not what they claim to be --------------------------------------------


def _torch_save(path: Path, exploit: Exploit) -> bytes:
    torch.save({"x": exploit}, path)
    return path.read_bytes()


# Each: (the bad content, given the file's path and an `exploit`; what the error says).
BAD_FILES = {
    "not-safetensors": (lambda path, exploit: b"no tensors in here", "not a valid safetensors"),
    "truncated": (lambda path, exploit: path.read_bytes()[:200], "not a valid safetensors"),
    "pickle": (lambda path, exploit: pickle.dumps({"x": exploit}), "not a valid safetensors"),
    "torch.save": (_torch_save, "not a valid safetensors"),
}


@pytest.fixture(params=list(BAD_FILES))
def bad_file(request: pytest.FixtureRequest) -> tuple[Callable[[Path, Exploit], bytes], str]:
    """A way to spoil a .safetensors file: `(make, message)`; write `make(path, exploit)`
    over it and expect an error holding `message` (and `exploit` never run)."""
    return BAD_FILES[request.param]


def _write_npz(path: Path, **change: np.ndarray | None) -> Path:
    """A tiny dataset .npz (4 classes of 8x8 images) with some arrays changed (None: left out)."""
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


@pytest.fixture(scope="session")
def write_npz() -> Callable[..., Path]:
    """`write_npz(path, x_test=...)`: 40 train and 12 test images of 4 classes, 8x8, with
    the arrays given replaced (None leaves one out)."""
    return _write_npz


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def train_digits():
    """`train_digits(data, name="bncnn", epochs=8)`: a plain Adam loop on digits.

    Model init and batch order are seeded without touching the global generator,
    so tests comparing against peer libraries get the same model every time.
    """

    def train(data: Dataset, name: str = "bncnn", epochs: int = 8) -> torch.nn.Module:
        mean, std = data.channel_stats()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = models.build(name, input_shape=(1, 8, 8), num_classes=10, mean=mean, std=std)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(data.y_train), generator=generator).split(64):
                loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return model.eval()

    return train
