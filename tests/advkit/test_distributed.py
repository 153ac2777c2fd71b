"""`advkit.distributed`: the same curve, sample for sample, on any number of processes.

The multi-process tests start 2 gloo processes with ``torchrun --standalone``
in a subprocess with a timeout, so nothing can hang the suite; every
collective inside has a 60 s timeout.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advkit.distributed import distributed_curve, per_sample_seeds
from advkit.evaluate import robustness_curve
from advkit.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
EPSILONS = [0.0, 0.05, 0.1, 0.3]

# The problem, as source: the tests and the worker processes build the same one.
PROBLEM = textwrap.dedent(
    """
    import torch
    torch.set_num_threads(1)
    def problem():
        g = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        x = torch.rand(45, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (45,), generator=g)
        return model, x, y
    """
)
namespace: dict = {}
exec(PROBLEM, namespace)
problem = namespace["problem"]

# Deterministic attacks give batch-independent results today; random ones need
# robustness_curve's per-sample seeds (sample_index).
DETERMINISTIC = [
    {"attack": "fgsm"},
    {"attack": "pgd", "random_start": False, "steps": 5},
    {"attack": "pgd", "random_start": False, "steps": 5, "target": 3},
    {"attack": "pgd", "random_start": False, "steps": 5, "target": "least-likely"},
]
RANDOM = [
    {"attack": "pgd", "steps": 5},
    {"attack": "pgd", "steps": 5, "target": "random", "restarts": 2},
]
needs_sample_index = pytest.mark.skipif(
    not per_sample_seeds(),
    reason="robustness_curve has no sample_index yet (per-sample seeds, issue 12): random "
    "attacks still depend on batch composition",
)

# What depends on the work actually done (how samples were grouped), not on the result.
NOT_COMPARED = ("seconds", "passes", "cost", "checks")


def comparable(curve) -> dict:
    d = curve.to_dict() if not isinstance(curve, dict) else dict(curve)
    for key in NOT_COMPARED:
        d.pop(key, None)
    # How the work was split: processes and batches (per-sample seeds make them irrelevant).
    split = ("world_size", "batch_size")
    d["settings"] = {k: v for k, v in d.get("settings", {}).items() if k not in split}
    return d


def assert_same_curve(single, other):
    assert comparable(other) == comparable(single)


@pytest.mark.parametrize("kw", DETERMINISTIC, ids=lambda kw: "-".join(map(str, kw.values())))
def test_chunks_give_the_single_process_curve(kw):
    model, x, y = problem()
    single = robustness_curve(model, x, y, EPSILONS, batch_size=16, examples=10, **kw)
    chunked = distributed_curve(
        model, x, y, EPSILONS, batch_size=16, chunk_size=7, examples=10, **kw
    )
    assert_same_curve(single, chunked)
    assert chunked.settings["world_size"] == 1
    for key in ("x", "y", "target", "x_adv"):
        assert torch.equal(chunked.examples[key], single.examples[key])


@needs_sample_index
@pytest.mark.parametrize("kw", RANDOM, ids=["pgd", "pgd-random-target"])
def test_random_attacks_do_not_depend_on_the_chunks(kw):
    model, x, y = problem()
    single = robustness_curve(model, x, y, EPSILONS, batch_size=16, **kw)
    assert_same_curve(single, distributed_curve(model, x, y, EPSILONS, chunk_size=7, **kw))


class Stop(Exception):
    pass


def interrupted(model, x, y, resume, after, **kw):
    """Run a curve and stop it once `after` samples are done (progress is kept)."""

    def stop(done, total):
        if done >= after and done < total:
            raise Stop

    with pytest.raises(Stop):
        distributed_curve(model, x, y, EPSILONS, progress=stop, resume=resume, **kw)


def test_an_interrupted_curve_continues_where_it_stopped(tmp_path):
    model, x, y = problem()
    kw = {"attack": "pgd", "random_start": False, "steps": 5, "batch_size": 8, "examples": 6}
    resume = tmp_path / "progress" / "curve.json"
    interrupted(model, x, y, resume, after=20, chunk_size=10, **kw)
    saved = json.loads(resume.read_text())
    assert len(saved["samples"]) == 20
    seen = []
    # Continued with another chunk size: only the 25 samples left are attacked.
    resumed = distributed_curve(
        model, x, y, EPSILONS, resume=resume, chunk_size=4,
        progress=lambda done, total: seen.append(done), **kw,
    )  # fmt: skip
    single = robustness_curve(model, x, y, EPSILONS, **kw)
    assert_same_curve(single, resumed)
    assert torch.equal(resumed.examples["x_adv"], single.examples["x_adv"])
    # Progress starts from the 20 saved samples; the first round of 4 ends at 24.
    assert min(seen) >= 20 and 24 in seen and seen[-1] == 45
    assert not resume.exists()  # removed once the curve is complete


def test_progress_of_other_settings_is_not_reused(tmp_path):
    model, x, y = problem()
    kw = {"attack": "fgsm", "batch_size": 8}
    resume = tmp_path / "curve.json"
    interrupted(model, x, y, resume, after=10, chunk_size=10, **kw)
    seen = []
    distributed_curve(
        model, x, y, EPSILONS, resume=resume, seed=1, chunk_size=5,
        progress=lambda done, total: seen.append(done), **kw,
    )  # fmt: skip
    # Started from scratch: the 10 samples saved were for seed 0.
    assert min(seen) < 5 and 5 in seen


WORKER = PROBLEM + textwrap.dedent(
    """
    import datetime, json, sys
    import torch.distributed as dist
    from advkit.distributed import distributed_curve
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    out, resume, kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model, x, y = problem()
    if kw.pop("disagree", False) and rank == 1:
        y = (y + 1) % 10
    if kw.pop("broken", False) and rank == 1:  # one logit: fails inside rank 1's chunk
        model = torch.nn.Sequential(model, torch.nn.Linear(10, 1))
    try:
        curve = distributed_curve(
            model, x, y, [0.0, 0.05, 0.1, 0.3], resume=resume or None, examples=6, **kw
        )
        result = {"curve": curve.to_dict(), "x_adv": curve.examples["x_adv"].flatten().tolist()}
    except ValueError as e:
        result = {"error": str(e)}
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
    """
)


def torchrun(args, timeout=180, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, "--nproc-per-node", "2", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw,
    )  # fmt: skip


def run_workers(tmp_path, kw, resume=""):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "result"
    done = torchrun([script, out, resume, json.dumps(kw)])
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_processes_give_the_single_process_curve(tmp_path):
    model, x, y = problem()
    for kw in [DETERMINISTIC[1], DETERMINISTIC[2]] + (RANDOM if per_sample_seeds() else []):
        kw = {**kw, "batch_size": 8}
        single = robustness_curve(model, x, y, EPSILONS, examples=6, **kw)
        ranks = run_workers(tmp_path, kw)
        for result in ranks:
            assert_same_curve(single, result["curve"])
            assert result["curve"]["settings"]["world_size"] == 2
            assert result["x_adv"] == single.examples["x_adv"].flatten().tolist()


@pytest.mark.slow
def test_two_processes_continue_what_one_process_started(tmp_path):
    model, x, y = problem()
    kw = {"attack": "pgd", "random_start": False, "steps": 5, "batch_size": 8}
    resume = tmp_path / "curve.json"
    interrupted(model, x, y, resume, after=16, chunk_size=8, examples=6, **kw)
    ranks = run_workers(tmp_path, kw, resume=str(resume))
    single = robustness_curve(model, x, y, EPSILONS, examples=6, **kw)
    for result in ranks:
        assert_same_curve(single, result["curve"])
    assert not resume.exists()


@pytest.mark.slow
def test_processes_that_disagree_about_the_data_fail_clearly(tmp_path):
    ranks = run_workers(tmp_path, {"attack": "fgsm", "disagree": True})
    for result in ranks:
        assert "the processes disagree about the data and settings" in result["error"]
        assert "y_sha256" in result["error"]


@pytest.mark.slow
def test_an_error_on_one_process_is_raised_on_every_process(tmp_path):
    ranks = run_workers(tmp_path, {"attack": "fgsm", "broken": True})
    assert "model must map x to logits" in ranks[1]["error"]
    assert ranks[0]["error"].startswith("process 1 failed: ValueError: model must map x")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_digits):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train(TrainConfig(model="mlp", epochs=1), out, dataset=small_digits)
    return out


@pytest.mark.slow
def test_torchrun_advkit_attack_writes_the_single_process_record_once(trained, tmp_path, cli):
    args = ["--limit", "40", "--steps", "3", "--eps", "0,0.1,0.2", "--batch-size", "16"]
    args += ["--no-random-start"] if not per_sample_seeds() else []
    single = cli("attack", trained, *args)
    assert single.exit_code == 0, single.output
    (path,) = (trained / "attacks").glob("pgd-linf-untargeted-*.json")
    expected = json.loads(path.read_text())
    done = torchrun(["-m", "advkit", "--threads", "1", "attack", trained, *args, "--force"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("clean accuracy") == 1  # the table, printed by rank 0 only
    assert "sample" not in done.stderr  # no progress bar: stderr is not a terminal
    record = json.loads(path.read_text())
    assert record["world_size"] == 2 and expected["world_size"] == 1
    assert comparable(record["curve"]) == comparable(expected["curve"])
    assert record["settings"] == expected["settings"]
    assert not list((trained / "attacks" / ".progress").glob("*"))
