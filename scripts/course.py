"""The course experiment: every model x every optimizer, attacked every way, one report.

Trains mlp, bncnn and attention with sgd, momentum, adagrad, rmsprop and adam
(15 runs), attacks each with FGSM and PGD, L-inf and L2, untargeted and with a
random target, over an epsilon grid that fits the dataset; trains adversarially
(PGD-AT for every model, FGSM-RS for the bncnn) and attacks those runs
untargeted; attacks bncnn-adam behind JPEG and random resize-and-pad, naive
and adaptive (BPDA, EOT); then writes the report. Re-running skips every run and attack already complete with identical
settings (keyed by a hash of its config), so an interrupted pipeline resumes
where it stopped and a changed setting reruns only what it affects.

    python scripts/course.py                 # digits, about 3.5-5 minutes on 2 cores
    python scripts/course.py --quick         # a first look in about a minute
    python scripts/course.py --dataset data.npz --out runs-mine --report report-mine

Jobs run in worker processes with one torch thread each: on small models two
single-threaded jobs side by side finish sooner than one job on two threads,
and a single-threaded job gives the same numbers wherever it runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see BENCHMARKING.md

import heapq
import itertools
import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import click
import torch
from tqdm import tqdm

import models
from advkit import runs
from advkit.attack_runs import attack_run, default_epsilons, find_complete
from advkit.cli.common import Failure, device_option, fail_cleanly, pick_device
from advkit.data import Dataset, load_dataset
from advkit.evaluate import attack_options
from advkit.records import AttackSettings
from advkit.train import DEFAULT_LR, TrainConfig, run_status, train
from advkit.transfer import TRANSFER_DIR, TransferSettings, default_path, transfer_runs
from advkit.transfer import read_record as read_transfer
from advkit.transfer import write_record as write_transfer

MODELS = ("mlp", "bncnn", "attention")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")

# Per optimizer: a schedule that trains every course model well on digits with
# advkit's default learning rate (DEFAULT_LR, the one table `advkit train` uses;
# measured, see the README). Warm-up helps the adaptive methods and momentum
# avoid a bad first epoch with the attention model.
RECIPES: dict[str, dict] = {
    "sgd": {"schedule": "cosine"},
    "momentum": {"schedule": "cosine", "warmup_epochs": 2},
    "adagrad": {"schedule": "cosine"},
    "rmsprop": {"schedule": "cosine", "warmup_epochs": 2},
    "adam": {"schedule": "cosine", "warmup_epochs": 1},
}
# Epochs per model: the models' recommended ones; --quick uses fewer and attacks fewer samples.
QUICK_EPOCHS = {"mlp": 8, "bncnn": 3, "attention": 6}

# Every attack setting of the course: attack x norm x (untargeted, random target).
ATTACK_SETTINGS = [
    (attack, norm, target)
    for attack in ("fgsm", "pgd")
    for norm in ("linf", "l2")
    for target in (None, "random")
]

# The headline: the strong evaluation (APGD-CE, targeted APGD on the top classes),
# untargeted, both norms; the report's worst case over every attack of a run rests
# on it, with the default preset measured against AutoAttack (BENCHMARKS.md). It
# runs at the report's comparison budgets only (the teaching attacks draw the
# whole curves), which keeps the pipeline within 5 minutes on 2 cores; --quick
# runs a lighter sequence.
HEADLINE_ATTACK = "strong"
HEADLINE_QUICK = {"strength": "fast", "steps": 20, "targets": 2, "targeted_steps": 10}

# Adversarially trained runs beside the standard ones (Adam, L-inf eps 0.1 on
# digits): PGD-AT for every model, FGSM-RS for the bncnn. Fewer epochs and PGD
# steps than a benchmark run, so that the whole pipeline stays within 5 minutes
# (scripts/bench/defenses.py trains the full versions). They are attacked
# untargeted only.
ADV_EPS = 0.1
ADV_RUNS = [(model, "pgd") for model in MODELS] + [("bncnn", "fgsm-rs")]
ADV_EPOCHS = {"mlp": 10, "bncnn": 5, "attention": 5}
ADV_QUICK_EPOCHS = {"mlp": 3, "bncnn": 2, "attention": 2}
ADV_STEPS = 3
# Passive defenses on bncnn-adam: PGD L-inf naive and adaptive (the lecture's warning).
DEFENSES = [("jpeg:75", "bpda"), ("resize:0.1", "eot:4")]
DEFENDED_RUN = ("bncnn", "adam")


@dataclass
class Plan:
    dataset: str
    data_dir: str | None
    out: Path
    models: tuple[str, ...]
    optimizers: tuple[str, ...]
    quick: bool
    steps: int
    limit: int | None
    seed: int
    adversarial: bool = True


def train_config(plan: Plan, model: str, optimizer: str) -> TrainConfig:
    epochs = (QUICK_EPOCHS if plan.quick else models.DEFAULT_EPOCHS)[model]
    recipe = dict(RECIPES[optimizer])
    recipe["warmup_epochs"] = min(recipe.get("warmup_epochs", 0), epochs - 1)
    return TrainConfig(
        model=model,
        dataset=plan.dataset,
        data_dir=plan.data_dir,
        optimizer=optimizer,
        lr=DEFAULT_LR[optimizer],
        epochs=epochs,
        seed=plan.seed,
        **recipe,
    )


def adversarial_config(plan: Plan, model: str, mode: str) -> TrainConfig:
    """An adversarially trained run (ADV_RUNS): the Adam recipe plus the training attack."""
    base = train_config(plan, model, "adam")
    epochs = (ADV_QUICK_EPOCHS if plan.quick else ADV_EPOCHS)[model]
    return replace(
        base, epochs=epochs, warmup_epochs=min(base.warmup_epochs, epochs - 1),
        adversarial=mode, adv_eps=ADV_EPS, adv_steps=ADV_STEPS if mode == "pgd" else None,
    )  # fmt: skip


def defense_settings(plan: Plan, dataset_name: str) -> list[AttackSettings]:
    """PGD L-inf on the defended run, naive and adaptive for each of DEFENSES."""
    return [
        AttackSettings.make(
            attack="pgd",
            norm="linf",
            epsilons=default_epsilons(dataset_name, "linf"),
            limit=plan.limit,
            seed=plan.seed,
            steps=plan.steps,
            defense=defense,
            adaptive=adaptive,
        )  # fmt: skip
        for defense, adaptive_mode in DEFENSES
        for adaptive in (None, adaptive_mode)
    ]


def plan_runs(
    plan: Plan, dataset_name: str
) -> list[tuple[TrainConfig, Path, list[AttackSettings]]]:
    """Every run of the pipeline: its config, its directory and the attacks it gets."""
    settings = attack_settings(plan, dataset_name)
    jobs = []
    for model in plan.models:
        for optimizer in plan.optimizers:
            extra = (
                defense_settings(plan, dataset_name) if (model, optimizer) == DEFENDED_RUN else []
            )
            out = plan.out / f"{model}-{optimizer}"
            jobs.append((train_config(plan, model, optimizer), out, settings + extra))
    if plan.adversarial:
        untargeted = [s for s in settings if s.target is None]
        for model, mode in ADV_RUNS:
            if model in plan.models:
                out = plan.out / f"{model}-adam-{mode}-at"
                jobs.append((adversarial_config(plan, model, mode), out, untargeted))
    return jobs


def headline_eps(dataset_name: str, norm: str) -> float:
    """The report's comparison budget: a third of the way up the grid, where models still differ."""
    grid = default_epsilons(dataset_name, norm)
    return grid[len(grid) // 3]


def attack_settings(plan: Plan, dataset_name: str) -> list[AttackSettings]:
    """The teaching attacks (FGSM and PGD, every norm and target mode) and the headline."""
    headline = [
        AttackSettings.make(
            attack=HEADLINE_ATTACK,
            norm=norm,
            epsilons=[0.0, headline_eps(dataset_name, norm)],
            limit=plan.limit,
            seed=plan.seed,
            **(HEADLINE_QUICK if plan.quick else {}),
        )  # fmt: skip
        for norm in ("linf", "l2")
    ]
    return headline + [
        AttackSettings.make(
            attack=attack,
            norm=norm,
            epsilons=default_epsilons(dataset_name, norm),
            target=target,
            limit=plan.limit,
            seed=plan.seed,
            # --steps applies to the iterative attacks, those that take `steps`.
            **({"steps": plan.steps} if "steps" in attack_options(attack) else {}),
        )
        for attack, norm, target in ATTACK_SETTINGS
    ]


# --- worker side ---------------------------------------------------------------


def _init_worker() -> None:
    torch.set_num_threads(1)
    # A curve's warnings (e.g. zero gradients through JPEG) are its flags: they are in
    # every record and on the report's page, not worth a traceback-like line here.
    warnings.filterwarnings("ignore", category=UserWarning)


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str | None, seed: int) -> Dataset:
    return load_dataset(name, data_dir=data_dir, seed=seed)


def _train_job(config: TrainConfig, out: Path, status: str, device: str) -> dict:
    data = _dataset(config.dataset, config.data_dir, config.seed)
    return train(
        config,
        out,
        resume=status == "partial",
        force=status == "different",
        device=device,
        dataset=data,
    )


def _attack_job(run_dir: Path, settings: AttackSettings, dataset: tuple, device: str) -> str:
    record = attack_run(run_dir, settings, device=device, figure=False, data=_dataset(*dataset))
    return f"{record.name} acc@max={record.curve.accuracy[-1]:.2f}"


def _transfer_job(plan: Plan, dataset_name: str, dataset: tuple, device: str) -> tuple[int, int]:
    return run_transfers(plan, dataset_name, _dataset(*dataset), device)


# --- the pipeline ----------------------------------------------------------------


# The homework's ladder of transfer attacks (ML 2021 Spring HW10, and its 2022 edition).
TRANSFER_ATTACKS = {
    "FGSM": ("fgsm", {}),
    "I-FGSM": ("mifgsm", {"decay": 0.0}),
    "MI-FGSM": ("mifgsm", {}),
    "DIM-MI-FGSM": ("mifgsm", {"diversity": 0.5}),
}


def run_transfers(plan: Plan, dataset_name: str, data: Dataset, device: str) -> tuple[int, int]:
    """Transfer between the model families' adam runs: each family, each pair as an ensemble.

    Every (source, victim) cell of each attack of `TRANSFER_ATTACKS`, at an
    L-inf budget two thirds up the dataset's grid, where white-box PGD fools
    nearly every sample. Returns (matrices computed, matrices already complete).
    """
    victims = [plan.out / f"{m}-adam" for m in plan.models if "adam" in plan.optimizers]
    if len(victims) < 2:
        return 0, 0
    sources = [[v] for v in victims] + [list(p) for p in itertools.combinations(victims, 2)]
    grid = default_epsilons(dataset_name, "linf")
    hashes = {v.name: runs.config_hash(runs.read_json(v / runs.CONFIG)) for v in victims}
    computed = skipped = 0
    for attack, options in TRANSFER_ATTACKS.values():
        settings = TransferSettings.make(
            attack=attack, epsilons=[grid[len(grid) * 2 // 3]], limit=plan.limit, seed=plan.seed,
            **options,
        )  # fmt: skip
        if any(
            r.settings == settings and r.runs == hashes
            for r in map(
                read_transfer, (victims[0] / TRANSFER_DIR).glob(f"transfer-{attack}-*.json")
            )
        ):
            skipped += 1
            continue
        record = transfer_runs(sources, victims, settings, device=device, data=data)
        write_transfer(record, default_path(record, victims[0]))
        computed += 1
    return computed, skipped


# Rough relative costs of the jobs (measured on digits: strong on attention is the
# longest, FGSM on the MLP the shortest). The pool starts the longest ready job
# first, so the last minute is not one long job on one core while the other idles.
_MODEL_COST = {"attention": 4.0, "bncnn": 2.0, "mlp": 0.5}
_ATTACK_COST = {"strong": 8.0, "pgd": 3.0}


def _job_cost(config: TrainConfig, attack: str | None = None) -> float:
    """A guess of a job's relative cost: training (attack None) or one attack on the run."""
    cost = _MODEL_COST.get(config.model, 1.0) * (2.0 if config.adversarial != "none" else 1.0)
    return cost * (_ATTACK_COST.get(attack, 1.0) if attack is not None else 1.0)


class _Pool:
    """A process pool fed longest job first, never more jobs in flight than workers.

    `push(cost, label, fn, *args)` queues a job; `done()` waits for the next to
    finish and returns its label and result (a failed job raises its error).
    """

    def __init__(self, pool: ProcessPoolExecutor, workers: int) -> None:
        self.pool, self.workers = pool, workers
        self.ready: list[tuple[float, int, tuple, Callable, tuple]] = []
        self.running: dict[Future, tuple] = {}
        self.order = itertools.count()  # equal costs: first pushed, first started

    def push(self, cost: float, label: tuple, fn: Callable, *args: object) -> None:
        heapq.heappush(self.ready, (-cost, next(self.order), label, fn, args))

    def __bool__(self) -> bool:
        return bool(self.ready or self.running)

    def done(self) -> tuple[tuple, Any]:
        while self.ready and len(self.running) < self.workers:
            _, _, label, fn, args = heapq.heappop(self.ready)
            self.running[self.pool.submit(fn, *args)] = label
        finished = next(iter(wait(self.running, return_when=FIRST_COMPLETED)[0]))
        return self.running.pop(finished), finished.result()


def run_pipeline(plan: Plan, report_dir: Path | None, device: torch.device, workers: int) -> dict:
    """Train, attack, report; skip whatever is already complete. Returns timings and counts."""
    started = time.perf_counter()
    data = _dataset(plan.dataset, plan.data_dir, plan.seed)
    dataset_key = (plan.dataset, plan.data_dir, plan.seed)
    name = data.name if plan.dataset.endswith(".npz") else plan.dataset
    planned = plan_runs(plan, name)
    run_dirs = [out for _, out, _ in planned]
    statuses = {out: run_status(config, out, data) for config, out, _ in planned}
    trains = [(c, out, statuses[out]) for c, out, _ in planned if statuses[out] != "complete"]
    # The transfer matrices need the adam runs trained first.
    awaited = {out for _, out, _ in trains if out.name in {f"{m}-adam" for m in plan.models}}
    counts = {"attacks": 0, "skipped_attacks": 0}
    n_attacks = sum(len(wanted) for _, _, wanted in planned)
    bar = tqdm(total=len(trains) + n_attacks + 1, desc="course", unit="job", file=sys.stderr,
               dynamic_ncols=True)  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    device_name = str(device)
    transfers = (0, 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as ex:
        pool = _Pool(ex, workers)

        def queue_attacks(config: TrainConfig, out: Path, wanted: list[AttackSettings]) -> None:
            for s in wanted:
                if find_complete(out, s) is not None:
                    counts["skipped_attacks"] += 1
                    bar.update(1)
                else:
                    counts["attacks"] += 1
                    label = ("attack", out, s)
                    pool.push(_job_cost(config, s.attack), label, _attack_job, out, s,
                              dataset_key, device_name)  # fmt: skip

        def queue_transfers() -> None:
            pool.push(8.0, ("transfer", None, None), _transfer_job, plan, name, dataset_key,
                      device_name)  # fmt: skip

        for config, out, status in trains:  # every training before any attack
            pool.push(100.0 + _job_cost(config), ("train", out, config), _train_job, config, out,
                      status, device_name)  # fmt: skip
        for config, out, wanted in planned:
            if statuses[out] == "complete":
                queue_attacks(config, out, wanted)
        if not awaited:
            queue_transfers()
        wanted_by = {out: (config, out, wanted) for config, out, wanted in planned}
        while pool:
            (kind, out, what), result = pool.done()
            bar.update(1)
            if kind == "train":
                bar.write(f"trained {out.name}: test accuracy {result['test_accuracy']:.4f}",
                          file=sys.stderr)  # fmt: skip
                queue_attacks(*wanted_by[out])
                if out in awaited:
                    awaited.discard(out)
                    if not awaited:
                        queue_transfers()
            elif kind == "transfer":
                transfers = result
            else:
                bar.set_postfix_str(f"{out.name} {result}")
    bar.close()
    seconds_train_attack = time.perf_counter() - started
    written = None
    if report_dir is not None:
        from advkit.report import build_report

        eps = {norm: headline_eps(name, norm) for norm in ("linf", "l2")}
        written = build_report(run_dirs, report_dir, eps_linf=eps["linf"], eps_l2=eps["l2"])
    return {
        "runs": len(run_dirs),
        "trained": len(trains),
        "skipped_runs": len(run_dirs) - len(trains),
        **counts,
        "transfers": transfers[0],
        "skipped_transfers": transfers[1],
        "seconds_train_attack": seconds_train_attack,
        "seconds": time.perf_counter() - started,
        "report": written,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="digits, mnist, fashion-mnist, cifar10 or a .npz file.",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Where torchvision datasets live."
)
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the run directories go.",
)
@click.option(
    "--report",
    "report_dir",
    default="report",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the report goes.",
)
@click.option("--no-report", is_flag=True, help="Train and attack only.")
@click.option(
    "--quick",
    is_flag=True,
    help="Fewer epochs and fewer attacked samples: a first look in about a minute.",
)
@click.option(
    "--models",
    "model_names",
    default=",".join(MODELS),
    show_default=True,
    help="Comma-separated models.",
)
@click.option(
    "--optimizers",
    default=",".join(OPTIMIZERS),
    show_default=True,
    help="Comma-separated optimizers.",
)
@click.option("--steps", type=click.IntRange(min=1), help="PGD steps [default: 10, quick 5].")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Attack only the first N test samples [default: all, quick 100].",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-adversarial", is_flag=True, help="Leave out the adversarially trained runs.")
@click.option(
    "--workers",
    default=min(2, os.cpu_count() or 1),
    show_default=True,
    type=click.IntRange(min=1),
    help="Parallel worker processes (one torch thread each on the CPU).",
)
@device_option
@fail_cleanly
def main(
    dataset,
    data_dir,
    out,
    report_dir,
    no_report,
    quick,
    model_names,
    optimizers,
    steps,
    limit,
    seed,
    no_adversarial,
    workers,
    device,
):
    """Train every course model with every course optimizer, attack them all, write the report."""
    chosen_models = tuple(m for m in model_names.split(",") if m)
    chosen_opts = tuple(o for o in optimizers.split(",") if o)
    for name, chosen, allowed in (
        ("--models", chosen_models, MODELS),
        ("--optimizers", chosen_opts, OPTIMIZERS),
    ):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise Failure(
                f"{name} must be a comma-separated subset of {','.join(allowed)}, got {bad or 'nothing'}"
            )
    dev = pick_device(device)
    if dev.type != "cpu":
        workers = 1  # one process drives the accelerator
    plan = Plan(
        dataset=dataset,
        data_dir=data_dir,
        out=Path(out),
        models=chosen_models,
        optimizers=chosen_opts,
        quick=quick,
        steps=steps or (5 if quick else 10),
        limit=limit or (100 if quick else None),
        seed=seed,
        adversarial=not no_adversarial,
    )
    result = run_pipeline(plan, None if no_report else Path(report_dir), dev, workers)
    click.echo(
        f"{result['runs']} runs ({result['trained']} trained, {result['skipped_runs']} already complete), "
        f"{result['attacks']} attacks ({result['skipped_attacks']} already complete) "
        f"in {result['seconds']:.0f}s"
    )
    for run_dir in sorted(plan.out.glob("*-*")):
        summary = run_dir / runs.SUMMARY
        if summary.exists():
            click.echo(
                f"  {run_dir.name:<22} test accuracy {runs.read_json(summary)['test_accuracy']:.4f}"
            )
    if result["report"] is not None:
        click.echo(f"report: {Path(report_dir) / 'index.html'}")


if __name__ == "__main__":
    main()
