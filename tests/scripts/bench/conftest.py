"""Helpers of the benchmark suites' smoke tests: row checks and a `python -m scripts.bench` run."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def check_rows(section, expected: list[str]) -> None:
    """`section` has one row per expected prefix, finite values, positive ratios, a markdown table."""
    whats = [row.what for row in section.rows]
    assert len(whats) == len(expected), whats
    for what, start in zip(whats, expected, strict=True):
        assert what.startswith(start), (what, start)
    for row in section.rows:
        assert row.values and all(math.isfinite(v) for v in row.values), row
        # A ratio to nothing (no memory growth at the smallest size) is nan, never on a target.
        finite = [r for r in row.ratios or [] if row.target or not math.isnan(r)]
        assert all(math.isfinite(r) and r > 0 for r in finite), row
    text = section.markdown()
    assert text.startswith(f"### {section.title}") and text.count("\n| ") >= len(expected) + 1


def run_quick(suite: str, out: Path) -> str:
    """`python -m scripts.bench --quick --only SUITE --out OUT` with one thread; its stdout.

    OUT starts with prose and an empty region of SUITE, which must be kept and filled.
    """
    out.write_text(f"# doc\n\nprose\n\n<!-- bench:{suite}:start -->\n<!-- bench:{suite}:end -->\n")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "scripts.bench", "--quick", "--threads", "1"]
    done = subprocess.run(
        [*command, "--only", suite, "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = out.read_text()
    assert (
        written.startswith("# doc\n\nprose\n\n") and f"<!-- bench:targets-{suite}:start" in written
    )
    assert "Machine: CPU" in written and "1 torch threads; OMP_WAIT_POLICY=PASSIVE" in written
    return done.stdout


@pytest.fixture
def rows_check():
    return check_rows


@pytest.fixture
def quick_run():
    return run_quick
