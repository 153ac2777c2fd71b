"""The course pipeline resumes after a kill and reruns only what a change affects."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def course(out, *extra):
    steps = [] if "--steps" in extra else ["--steps", "3"]
    return [
        sys.executable, str(ROOT / "scripts" / "course.py"), "--quick", "--models", "mlp",
        "--optimizers", "sgd,adam", "--limit", "40", "--workers", "1",
        "--device", "cpu", "--no-report", "--no-adversarial", "--out", str(out), *steps, *extra,
    ]  # fmt: skip


# What the pipeline plans for mlp x (sgd, adam) without the adversarially trained runs
# (scripts/course.py: plan_runs, attack_settings): per run, the headline `strong`
# (untargeted, L-inf and L2; its steps fixed by --quick) and FGSM and PGD for each norm,
# untargeted and random target. No defenses (they go to bncnn-adam) and no transfers
# (they need two model families).
RUNS = 2
PER_RUN = {"strong": 2, "fgsm": 4, "pgd": 4}
ATTACKS = RUNS * sum(PER_RUN.values())
TAKE_STEPS = RUNS * PER_RUN["pgd"]  # what --steps changes


def results(out: Path) -> dict:
    """Every number the pipeline produced, without timings and dates."""
    found = {}
    for path in sorted(out.glob("*/attacks/*.json")):
        record = json.loads(path.read_text())
        curve = {k: v for k, v in record["curve"].items() if k != "seconds"}
        found[str(path.relative_to(out))] = (record["run_key"], curve)
    for path in sorted(out.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        found[str(path.relative_to(out))] = summary["test_accuracy"]
    for path in sorted(out.glob("*/model.safetensors")):
        found[str(path.relative_to(out))] = path.read_bytes()
    return found


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_same_results(tmp_path):
    full = subprocess.run(course(tmp_path / "full"), env=ENV, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    expected = results(tmp_path / "full")
    records = [k for k in expected if "/attacks/" in k]
    assert len(records) == ATTACKS
    for attack, n in PER_RUN.items():
        assert sum(f"/attacks/{attack}-" in k for k in records) == RUNS * n, attack

    proc = subprocess.Popen(
        course(tmp_path / "cut"), env=ENV, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((tmp_path / "cut").glob("*/attacks/*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the pipeline finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its worker
    proc.wait()
    assert not list((tmp_path / "cut").rglob("*.tmp"))

    again = subprocess.run(course(tmp_path / "cut"), env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert results(tmp_path / "cut") == expected

    # Nothing left to do: everything is skipped.
    rerun = subprocess.run(course(tmp_path / "cut"), env=ENV, capture_output=True, text=True)
    nothing = f"{RUNS} runs (0 trained, {RUNS} already complete), 0 attacks ({ATTACKS} already"
    assert nothing in rerun.stdout, rerun.stdout

    # A changed attack setting reruns the attacks only, not the training.
    changed = subprocess.run(
        course(tmp_path / "cut", "--steps", "4"), env=ENV, capture_output=True, text=True
    )
    assert f"{RUNS} runs (0 trained, {RUNS} already complete)" in changed.stdout, changed.stdout
    # Only PGD takes --steps: FGSM and the headline (its own steps) are unchanged.
    rerun_only = f"{TAKE_STEPS} attacks ({ATTACKS - TAKE_STEPS} already complete)"
    assert rerun_only in changed.stdout, changed.stdout
    assert changed.returncode == 0, changed.stderr


def test_course_takes_its_learning_rates_from_advkit():
    import importlib.util

    from advkit.train import DEFAULT_LR

    spec = importlib.util.spec_from_file_location("course", ROOT / "scripts" / "course.py")
    course = importlib.util.module_from_spec(spec)
    sys.modules["course"] = course  # its dataclasses look their module up
    try:
        spec.loader.exec_module(course)
    finally:
        del sys.modules["course"]
    plan = course.Plan(
        dataset="digits", data_dir=None, out=Path("runs"), models=("mlp",),
        optimizers=course.OPTIMIZERS, quick=True, steps=3, limit=None, seed=0,
    )  # fmt: skip
    for optimizer in course.OPTIMIZERS:
        assert course.train_config(plan, "mlp", optimizer).resolved().lr == DEFAULT_LR[optimizer]
