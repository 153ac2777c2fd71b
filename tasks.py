"""Set up .venv and run the project's jobs; needs nothing but Python 3.10+.

    python3 tasks.py demo [ARGS]   the course pipeline on digits -> runs/, report/index.html
    python3 tasks.py test [ARGS]   lint (ruff, mypy), then the whole test suite (ARGS go to pytest)
    python3 tasks.py bench [ARGS]  the benchmark suites -> BENCHMARKS.md (ARGS: --only SUITE, --quick)

The first call creates .venv and installs advkit with its dev extras there;
later calls reuse it, and reinstall only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"

# Run before the tests by `test`, so CI enforces them.
LINT = [
    ["-m", "ruff", "check", "."],
    ["-m", "ruff", "format", "--check", "."],
    ["-m", "mypy", "attacks", "models", "advkit"],
]

JOBS = {
    "demo": ["scripts/course.py", "--out", "runs", "--report", "report"],
    "test": ["-m", "pytest"],
    "bench": ["-m", "scripts.bench", "--out", "BENCHMARKS.md"],
}


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print("creating .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(
        "installing advkit and its dependencies into .venv (first time: a few minutes) ...",
        file=sys.stderr,
    )
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in JOBS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    job, extra = argv[0], argv[1:]
    ensure_venv()
    # Two cores and OpenMP spin-waiting make torch crawl when anything else runs (BENCHMARKING.md).
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if job == "test":
        for command in LINT:
            print(f"lint: {' '.join(command[1:])}", file=sys.stderr)
            code = subprocess.run([str(PYTHON), *command], cwd=ROOT, env=env).returncode
            if code:
                return code
    return subprocess.run([str(PYTHON), *JOBS[job], *extra], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
