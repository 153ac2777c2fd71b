"""Training with the course's optimizers and learning-rate schedules.

Optimizers and schedules are torch.optim / torch.optim.lr_scheduler objects;
this module only picks them by name, runs the epoch loop, and keeps the run
directory up to date after every epoch so an interrupted run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import attacks
import models
from attacks import eval_mode

from . import __version__, accel, adversarial, distributed, runs
from .data import Dataset, batches, load_dataset

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine")
MONITORS = ("val_loss", "val_robust_acc")
AMP = ("none", *accel.AMP)

# The one table of default learning rates: per optimizer, a rate that trains
# every course model well on digits (measured with scripts/course.py, which
# takes its rates from here; see the README). Default epochs are per model:
# models.DEFAULT_EPOCHS.
DEFAULT_LR = {
    "sgd": 0.1,
    "momentum": 0.02,
    "adagrad": 0.02,
    "rmsprop": 5e-4,
    "adam": 1e-3,
    "adamw": 1e-3,
}
# Decay factor per decay step: step divides the rate by 10 three times over the
# run's epochs; exponential multiplies it by gamma every epoch.
DEFAULT_GAMMA = {"step": 0.1, "exponential": 0.9}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in config.json)."""

    model: str = "bncnn"
    dataset: str = "digits"
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    weight_decay: float = 0.0
    momentum: float | None = None  # None: 0.9 for "momentum", 0 otherwise
    schedule: str = "cosine"
    warmup_epochs: int = 0
    gamma: float | None = None  # None: DEFAULT_GAMMA[schedule]
    epochs: int | None = None  # None: models.DEFAULT_EPOCHS[model]
    batch_size: int = 64
    seed: int = 0
    patience: int | None = None  # early stopping on validation loss
    model_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    # Adversarial training (advkit.adversarial): the mode and its attack.
    adversarial: str = "none"  # none, pgd, fgsm-rs, trades
    adv_eps: float | None = None  # required with a mode
    adv_norm: str = "linf"
    adv_steps: int | None = None  # None: adversarial.DEFAULT_STEPS[mode]
    adv_step_size: float | None = None  # None: PGD's 2.5 eps / steps; 1.25 eps for fgsm-rs
    adv_random_start: bool = True
    trades_beta: float | None = None  # None: 6 for trades
    adv_eps_warmup: int = 0  # epochs of linear eps ramp-up
    overfit_guard: float = 0.5  # stop when val robust acc < this x the best (0: off)
    monitor: str = "val_loss"  # what early stopping and the kept weights follow
    amp: str = "none"  # autocast of the forward passes: none, bf16, fp16

    def resolved(self) -> TrainConfig:
        """Fill in the defaults that depend on other fields, and validate."""
        check_config(self)
        c = dataclasses.replace(self, model_options=dict(self.model_options))
        if c.lr is None:
            c.lr = DEFAULT_LR[c.optimizer]
        if c.momentum is None:
            c.momentum = 0.9 if c.optimizer == "momentum" else 0.0
        if c.gamma is None:
            c.gamma = DEFAULT_GAMMA.get(c.schedule, 1.0)
        if c.epochs is None:
            c.epochs = default_epochs(c.model)
        if c.warmup_epochs >= c.epochs:
            raise ValueError(
                f"warmup_epochs must be less than epochs ({c.epochs}), got {c.warmup_epochs}"
            )
        if c.adversarial != "none":
            if c.adv_steps is None:
                c.adv_steps = adversarial.DEFAULT_STEPS[c.adversarial]
            if c.trades_beta is None and c.adversarial == "trades":
                c.trades_beta = adversarial.DEFAULT_TRADES_BETA
            if c.adv_eps_warmup >= c.epochs:
                raise ValueError(
                    f"adv_eps_warmup must be less than epochs ({c.epochs}), got {c.adv_eps_warmup}"
                )
        return c


def default_epochs(model: str) -> int:
    """Epochs when none are given: models.DEFAULT_EPOCHS, 20 for a model it does not list."""
    return models.DEFAULT_EPOCHS.get(model, 20)


def check_config(c: TrainConfig) -> None:
    """Raise ValueError naming the first bad setting."""

    def bad(name: str, rule: str, value: Any) -> ValueError:
        return ValueError(f"{name} must be {rule}, got {value!r}")

    if c.model not in models.available():
        raise bad("model", f"one of {', '.join(models.available())}", c.model)
    if c.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"one of {', '.join(OPTIMIZERS)}", c.optimizer)
    if c.schedule not in SCHEDULES:
        raise bad("schedule", f"one of {', '.join(SCHEDULES)}", c.schedule)
    if c.lr is not None and not (math.isfinite(c.lr) and c.lr > 0):
        raise bad("lr", "a finite number > 0", c.lr)
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        raise bad("weight_decay", "a finite number >= 0", c.weight_decay)
    if c.momentum is not None:
        if not (0 <= c.momentum < 1):
            raise bad("momentum", "in [0, 1)", c.momentum)
        if c.momentum and c.optimizer not in ("sgd", "momentum", "rmsprop"):
            raise bad(
                "momentum", "unset for this optimizer (sgd, momentum, rmsprop use it)", c.momentum
            )
    if c.gamma is not None and not (0 < c.gamma <= 1):
        raise bad("gamma", "in (0, 1]", c.gamma)
    if c.gamma not in (None, 1.0) and c.schedule not in DEFAULT_GAMMA:
        raise bad("gamma", f"unset for schedule {c.schedule!r} (step, exponential use it)", c.gamma)
    if c.epochs is not None and c.epochs < 1:
        raise bad("epochs", "an integer >= 1", c.epochs)
    if c.batch_size < 1:
        raise bad("batch_size", "an integer >= 1", c.batch_size)
    if c.warmup_epochs < 0:
        raise bad("warmup_epochs", "an integer >= 0", c.warmup_epochs)
    if c.patience is not None and c.patience < 1:
        raise bad("patience", "an integer >= 1", c.patience)
    if c.amp not in AMP:
        raise bad("amp", f"one of {', '.join(AMP)}", c.amp)
    check_adversarial(c)


def check_adversarial(c: TrainConfig) -> None:
    """Raise ValueError naming the first bad or inconsistent adversarial-training setting."""

    def bad(name: str, rule: str, value: Any) -> ValueError:
        return ValueError(f"{name} must be {rule}, got {value!r}")

    if c.adversarial not in adversarial.MODES:
        raise bad("adversarial", f"one of {', '.join(adversarial.MODES)}", c.adversarial)
    if c.monitor not in MONITORS:
        raise bad("monitor", f"one of {', '.join(MONITORS)}", c.monitor)
    if c.adversarial == "none":
        for name in ("adv_eps", "adv_steps", "adv_step_size", "trades_beta"):
            if getattr(c, name) is not None:
                raise bad(
                    name, "unset without adversarial training (--adversarial)", getattr(c, name)
                )
        if c.adv_eps_warmup or c.monitor != "val_loss":
            what = "adv_eps_warmup" if c.adv_eps_warmup else "monitor"
            raise bad(what, "unset without adversarial training (--adversarial)", getattr(c, what))
        return
    if c.adv_eps is None or not (math.isfinite(c.adv_eps) and c.adv_eps > 0):
        raise bad("adv_eps", f"a finite number > 0 with adversarial={c.adversarial!r}", c.adv_eps)
    if c.adv_norm not in attacks.NORMS:
        raise bad("adv_norm", f"one of {', '.join(attacks.NORMS)}", c.adv_norm)
    if c.adv_steps is not None and c.adv_steps < 1:
        raise bad("adv_steps", "an integer >= 1", c.adv_steps)
    if c.adversarial == "fgsm-rs" and c.adv_steps not in (None, 1):
        raise bad("adv_steps", "1 (or unset) with fgsm-rs, a single step", c.adv_steps)
    if c.adv_step_size is not None and not (math.isfinite(c.adv_step_size) and c.adv_step_size > 0):
        raise bad("adv_step_size", "a finite number > 0", c.adv_step_size)
    if c.trades_beta is not None:
        if c.adversarial != "trades":
            raise bad("trades_beta", "unset unless adversarial is 'trades'", c.trades_beta)
        if not (math.isfinite(c.trades_beta) and c.trades_beta > 0):
            raise bad("trades_beta", "a finite number > 0", c.trades_beta)
    if c.adv_eps_warmup < 0:
        raise bad("adv_eps_warmup", "an integer >= 0", c.adv_eps_warmup)
    if not (0 <= c.overfit_guard < 1):
        raise bad("overfit_guard", "in [0, 1)", c.overfit_guard)


# Optimizers with a fused kernel (one update for all the parameters at once), by
# the device types torch >= 2.4 has it for. On CPU, the per-parameter loop of
# Adam took a quarter of a small model's training time; fused, a whole epoch
# ran 1.3-1.4x faster (Adagrad 1.2x). foreach=True changed nothing on CPU
# (Adagrad was slower), so the other optimizers keep torch's defaults.
FUSED_DEVICES = {"adam": ("cpu", "cuda"), "adamw": ("cpu", "cuda"), "adagrad": ("cpu",)}


def make_optimizer(c: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimizer named by ``c.optimizer`` (``c`` resolved); weight decay is the course's L2 term.

    Adam, AdamW and Adagrad use torch's fused kernel where it exists
    (``FUSED_DEVICES``, torch >= 2.4, floating-point parameters); anywhere
    else (MPS, older torch) the usual implementation, with the same results
    up to float rounding.
    """
    params = list(params)
    kw: dict[str, Any] = {"lr": c.lr, "weight_decay": c.weight_decay}
    momentum = c.momentum or 0.0  # None for the optimizers that have no momentum
    factories = {
        "sgd": lambda **o: torch.optim.SGD(params, momentum=momentum, **kw, **o),
        "momentum": lambda **o: torch.optim.SGD(params, momentum=momentum, **kw, **o),
        "adagrad": lambda **o: torch.optim.Adagrad(params, **kw, **o),
        "rmsprop": lambda **o: torch.optim.RMSprop(params, momentum=momentum, **kw, **o),
        "adam": lambda **o: torch.optim.Adam(params, **kw, **o),
        "adamw": lambda **o: torch.optim.AdamW(params, **kw, **o),
    }
    devices = FUSED_DEVICES.get(c.optimizer, ())
    if (
        params
        and torch.__version__ >= "2.4"
        and all(p.device.type in devices and p.is_floating_point() for p in params)
    ):
        try:
            return factories[c.optimizer](fused=True)
        except (RuntimeError, TypeError, ValueError):  # a build without the kernel
            pass
    return factories[c.optimizer]()


def make_scheduler(c: TrainConfig, optimizer: torch.optim.Optimizer):
    """Per-epoch schedule: linear warm-up over ``warmup_epochs``, then ``c.schedule``."""
    sched = torch.optim.lr_scheduler
    assert c.epochs is not None, "make_scheduler takes a resolved config"
    gamma = 1.0 if c.gamma is None else c.gamma  # constant and cosine have none
    n = max(1, c.epochs - c.warmup_epochs)  # epochs after warm-up
    factories = {
        "constant": lambda: sched.ConstantLR(optimizer, factor=1.0, total_iters=0),
        "step": lambda: sched.StepLR(optimizer, step_size=max(1, math.ceil(n / 4)), gamma=gamma),
        "exponential": lambda: sched.ExponentialLR(optimizer, gamma=gamma),
        "cosine": lambda: sched.CosineAnnealingLR(optimizer, T_max=n),
    }
    main = factories[c.schedule]()
    if c.warmup_epochs == 0:
        return main
    warmup = sched.LinearLR(
        optimizer, start_factor=1 / (c.warmup_epochs + 1), total_iters=c.warmup_epochs
    )
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[c.warmup_epochs])


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode."""
    device = next(model.parameters()).device
    loss, correct = 0.0, 0
    with eval_mode(model), torch.no_grad():
        for idx in batches(len(y), batch_size):
            xb, yb = x[idx].to(device), y[idx].to(device)
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    n = max(1, len(y))
    return loss / n, correct / n


class Reporter:
    """Hooks the training loop calls; the CLI turns them into progress bars."""

    def start(self, config: dict, out: Path, resumed_epoch: int) -> None: ...

    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None: ...

    def batch_end(self, loss: float, acc: float) -> None: ...

    def epoch_end(self, row: dict) -> None: ...

    def note(self, message: str) -> None:
        """Something the user should know (e.g. catastrophic overfitting stopped the run)."""


def make_config_dict(
    c: TrainConfig, data: Dataset, device: torch.device, out: Path | None = None
) -> dict:
    """The run's config.json; ``out`` (the run directory) records where the data is from it.

    An adversarially trained run records its training and validation attacks
    in ``training.adversarial`` (absent for standard training, so the config
    hash of a standard run is what it was before adversarial training existed).
    ``training.world_size`` is the number of processes (DistributedDataParallel),
    outside the config hash: a run may be resumed on another number;
    ``training.amp`` is there only with mixed precision.
    """
    config = _config_dict(c, data, device, out)
    config["training"]["world_size"] = distributed.world()[1]
    if c.amp != "none":
        config["training"]["amp"] = c.amp
    described = adversarial.describe(c)
    if described is not None:
        config["training"]["adversarial"] = described
    if c.monitor != "val_loss":
        config["training"]["monitor"] = c.monitor
    return config


def _config_dict(c: TrainConfig, data: Dataset, device: torch.device, out: Path | None) -> dict:
    mean, std = data.channel_stats()
    return {
        "model": {
            "name": c.model,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "options": {**c.model_options, "mean": mean, "std": std},
        },
        "dataset": {
            "name": c.dataset,
            "data_dir": c.data_dir,
            "seed": c.seed,
            "sizes": data.sizes(),
            "sha256": data.sha256,
            "path": data.path,
            "path_from_run": _relative(data.path, out),
        },
        "optimizer": {
            "name": c.optimizer,
            "lr": c.lr,
            "weight_decay": c.weight_decay,
            "momentum": c.momentum,
        },
        "schedule": {"name": c.schedule, "warmup_epochs": c.warmup_epochs, "gamma": c.gamma},
        "training": {
            "epochs": c.epochs,
            "batch_size": c.batch_size,
            "seed": c.seed,
            "patience": c.patience,
            "device": str(device),
        },
        "train_config": dataclasses.asdict(c),
        "versions": {
            "advkit": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _relative(path: str | None, out: Path | None) -> str | None:
    """``path`` relative to the run directory ``out`` (found again when both move together)."""
    if path is None or out is None:
        return None
    try:
        return os.path.relpath(path, out.resolve())
    except ValueError:  # another drive on Windows
        return None


def _prepare_out(out: Path, config: dict, resume: bool, force: bool) -> bool:
    """Check ``out`` and return whether a run there is to be continued."""
    if out.exists() and not out.is_dir():
        raise runs.RunError(f"--out {str(out)!r} exists and is not a directory")
    existing = out / runs.CONFIG
    if resume and not force and not existing.exists():
        what = "is empty" if out.exists() else "does not exist"
        raise runs.RunError(
            f"--resume: --out {str(out)!r} {what}, so there is no run to continue; "
            "drop --resume to start one"
        )
    if not out.exists():
        return False
    if not existing.exists():
        if any(out.iterdir()) and not force:
            raise runs.RunError(
                f"--out {str(out)!r} is not empty and holds no run; pass --force to use it anyway"
            )
        return False
    if force:
        for name in (runs.CONFIG, runs.WEIGHTS, runs.METRICS, runs.SUMMARY, runs.CHECKPOINT):
            (out / name).unlink(missing_ok=True)
        for sub in ("attacks", "figures"):
            shutil.rmtree(out / sub, ignore_errors=True)
        return False
    old = runs.read_json(existing)
    if not resume:
        raise runs.RunError(
            f"--out {str(out)!r} already holds a run; pass --resume to continue it "
            "or --force to replace it"
        )
    if not isinstance(old, dict) or runs.config_hash(old) != runs.config_hash(config):
        raise runs.RunError(
            f"--out {str(out)!r} holds a run with different settings; "
            "use another --out, or --force to replace it"
        )
    if _data_changed(old, config):
        raise runs.RunError(
            f"the dataset of the run in --out {str(out)!r} changed since it started (sha256 "
            f"{config['dataset']['sha256'][:12]}..., recorded {old['dataset']['sha256'][:12]}...); "
            "use --force to train afresh on the new data"
        )
    return True


def _data_changed(old: dict, new: dict) -> bool:
    """Both configs record a dataset sha256, and they differ (older runs record none)."""
    before = (old.get("dataset") or {}).get("sha256")
    after = new["dataset"].get("sha256")
    return before is not None and after is not None and before != after


def _seeded_states(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """States of fresh generators seeded with ``seed``: the CPU's, and ``device``'s if CUDA."""
    states = {"torch": torch.Generator().manual_seed(seed).get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.Generator(device=device).manual_seed(seed).get_state()
    return states


def _set_rng_state(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"shuffle": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    device: str | torch.device = "cpu",
    reporter: Reporter | None = None,
    dataset: Dataset | None = None,
) -> dict:
    """Train a model and keep ``out`` (a run directory) current after every epoch.

    Args:
        config: what to train and how; defaults are filled in by ``resolved()``.
        out: the run directory.
        resume: continue the run in ``out`` from its last completed epoch
            (from the start if none completed); the result equals an
            uninterrupted run. ``out`` must hold the run's config.json.
        force: replace whatever run ``out`` holds.
        device: where to train.
        reporter: progress hooks (the CLI's progress bar).
        dataset: an already loaded dataset (must match ``config.dataset``).

    Returns:
        The summary (also written to ``summary.json``): test accuracy,
        parameters, epochs, seconds.

    Raises:
        ValueError: a bad setting; ``RunError`` when ``out`` holds another run
            (or, with ``resume``, none); ``DataError`` for a dataset that
            cannot be loaded.
        TrainingDiverged: the loss became non-finite.
    """
    c = config.resolved()
    out = Path(out)
    device = torch.device(device)
    reporter = reporter if reporter is not None and distributed.is_main() else Reporter()
    data = dataset or load_dataset(c.dataset, data_dir=c.data_dir, seed=c.seed)
    cfg = make_config_dict(c, data, device, out)
    continuing, done = _on_main(_prepare, out, cfg, resume, force)
    if done is not None:
        return done  # already complete
    if c.amp == "fp16" and device.type != "cuda":
        warnings.warn(
            f"--amp fp16 on {device.type} runs without gradient scaling (CUDA only); "
            "bf16 has float32's range",
            stacklevel=2,
        )

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    devices = [device.index] if device.type == "cuda" else []
    # torch draws module initialization and dropout from the default generators
    # (they take no generator argument): give those of the devices in use the
    # state of explicit generators seeded with c.seed, and give the caller's
    # state back after. torch.manual_seed would also seed every other CUDA
    # device, beyond what fork_rng restores (or queue that until CUDA starts).
    with torch.random.fork_rng(devices=devices):
        _set_rng_state(_seeded_states(c.seed, device), device)
        model = runs.build_model(cfg).to(device)
        step = Step(c, model, device)
        optimizer = make_optimizer(c, model.parameters())
        scheduler = make_scheduler(c, optimizer)
        shuffle = torch.Generator().manual_seed(c.seed)
        return _fit(c, cfg, data, step, optimizer, scheduler, shuffle, out, continuing, reporter)


def _prepare(out: Path, cfg: dict, resume: bool, force: bool) -> tuple[bool, dict | None]:
    """Whether the run in ``out`` is continued, and its summary if it is already complete."""
    continuing = _prepare_out(out, cfg, resume, force)
    if continuing and (out / runs.SUMMARY).exists() and not (out / runs.CHECKPOINT).exists():
        return continuing, runs.read_json(out / runs.SUMMARY)
    return continuing, None


def _on_main(fn, *args):
    """``fn(*args)`` run by rank 0 alone; its result, or its exception, on every rank."""
    if distributed.world()[1] == 1:
        return fn(*args)
    result: tuple[str, Any] = ("ok", None)
    if distributed.is_main():
        try:
            result = ("ok", fn(*args))
        except Exception as e:  # raised on every rank below, so none waits for rank 0
            result = ("error", e)
    kind, value = distributed.broadcast(result)
    if kind == "error":
        raise value
    return value


class Step:
    """How a training step runs its forward passes, on one process or under DDP.

    With a process group of W > 1 ranks, ``train_model`` is the model wrapped
    in DistributedDataParallel (gradients averaged across ranks) and every
    rank takes ``idx[rank::W]`` of each global batch; ``model`` stays the plain
    module (what is saved, validated and attacked: the training examples are
    crafted on it, outside DDP's gradient synchronization). With ``c.amp``, the
    forward passes run under autocast and return float32 logits (the loss in
    float32), and float16 losses are scaled on CUDA (``scaler``).
    """

    def __init__(self, c: TrainConfig, model: torch.nn.Module, device: torch.device) -> None:
        self.rank, self.world = distributed.world()
        self.model, self.device = model, device
        net: torch.nn.Module = model
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        self.train_model = accel.accelerate(net, device=device, amp=c.amp)
        self.attack_model = accel.accelerate(model, device=device, amp=c.amp)
        self.scaler = accel.grad_scaler(device, c.amp)

    def shard(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's part of a global batch and the weight of its mean loss.

        The weight (``len(part) * W / len(idx)``) makes DDP's average of the
        ranks' gradients the gradient of the global batch's mean loss when the
        parts differ in size. A rank left without samples (a last batch
        smaller than W) runs one sample with weight 0.
        """
        if self.world == 1:
            return idx, 1.0
        part = idx[self.rank :: self.world]
        if len(part) == 0:
            return idx[:1], 0.0
        return part, len(part) * self.world / len(idx)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks."""
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values)
        return values.cpu()

    def start_epoch(self, seed: int, epoch: int) -> None:
        """Give every rank rank 0's buffers, and ranks > 0 their own seeded generators.

        Rank 0 draws dropout from the run's generator (saved in checkpoints),
        the other ranks from one seeded by (seed, epoch, rank): a resumed run
        draws what an uninterrupted one does.
        """
        if self.world == 1:
            return
        for buffer in self.model.buffers():
            dist.broadcast(buffer, 0)
        if self.rank > 0:
            mixed = (seed * 1_000_003 + epoch * 65_537 + self.rank * 7_919 + 99) % (2**63 - 1)
            _set_rng_state(_seeded_states(mixed, self.device), self.device)


def _fit(c, cfg, data, step, optimizer, scheduler, shuffle, out, continuing, reporter):
    model, device, main = step.model, step.device, distributed.is_main()
    state = {"epoch": 0, "rows": [], "best_val": math.inf, "bad_epochs": 0, "seconds": 0.0}
    state.update(best_robust=None, collapsed=None)
    if continuing and (out / runs.CHECKPOINT).exists():  # every rank reads the same one
        state = _restore(out, model, optimizer, scheduler, shuffle, step)
    rows = state["rows"]
    if main:
        runs.write_json(out / runs.CONFIG, cfg)
        runs.write_jsonl(out / runs.METRICS, rows)
    reporter.start(cfg, out, state["epoch"])

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    stop = "collapsed" if state["collapsed"] else None  # killed right after a collapse
    for epoch in range(state["epoch"], c.epochs if stop is None else 0):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        reporter.epoch_start(epoch + 1, c.epochs, math.ceil(len(y_train) / c.batch_size))
        step.start_epoch(c.seed, epoch)
        loss_sum, correct = _train_epoch(
            c, step, optimizer, x_train, y_train, shuffle, epoch, out, reporter
        )
        train_seconds = time.perf_counter() - t0
        scheduler.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / len(y_train)}
        row["train_acc"] = correct / len(y_train)
        row.update(_on_main(_validate, c, model, data, out, epoch))
        row.update(seconds=time.perf_counter() - t0, threads=torch.get_num_threads())
        if c.adversarial != "none":
            row["train_seconds"] = train_seconds
        state["seconds"] += row["seconds"]
        rows.append(row)
        stop = _judge(c, state, row, reporter)
        state["epoch"] = epoch + 1
        if main:
            _save_epoch(c, step, optimizer, scheduler, shuffle, out, state, stop)
        if step.world > 1:
            dist.barrier()
        reporter.epoch_end(row)
        if stop is not None:
            break
    return _on_main(_finish, c, cfg, data, model, out, device, state, stop)


def _save_epoch(c, step, optimizer, scheduler, shuffle, out, state, stop) -> None:
    """Write the epoch's weights, checkpoint and metrics (rank 0)."""
    # With early stopping, model.safetensors holds the best weights; after a
    # collapse it keeps the last good epoch's.
    if stop != "collapsed" and (c.patience is None or state["bad_epochs"] == 0):
        runs.save_weights(step.model, out / runs.WEIGHTS)
    if step.scaler.is_enabled():
        state["scaler"] = step.scaler.state_dict()
    rng = _rng_state(shuffle, step.device)
    runs.save_checkpoint(out / runs.CHECKPOINT, step.model, optimizer, scheduler, state, rng)
    runs.write_jsonl(out / runs.METRICS, state["rows"])


def _validate(c: TrainConfig, model, data: Dataset, out: Path, epoch: int) -> dict:
    """Validation loss and accuracy; with adversarial training, robust accuracy and loss too."""
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val, 512)
    if not math.isfinite(val_loss):
        raise TrainingDiverged(
            f"validation loss became {val_loss} at epoch {epoch + 1}; "
            f"{_kept(out, epoch)}; try a lower --lr"
        )
    row = {"val_loss": val_loss, "val_acc": val_acc}
    if c.adversarial != "none":
        n = adversarial.VAL_SAMPLES
        robust, robust_loss = adversarial.robust_accuracy(
            model,
            data.x_val[:n],
            data.y_val[:n],
            eps=float(c.adv_eps or 0.0),
            norm=c.adv_norm,
            seed=c.seed,
        )
        row.update(val_robust_acc=robust, val_robust_loss=robust_loss)
    return row


def _judge(c: TrainConfig, state: dict, row: dict, reporter: Reporter) -> str | None:
    """Update the best-so-far in ``state``; return why training stops now, if it does.

    ``"collapsed"``: catastrophic overfitting (robust accuracy fell below
    ``overfit_guard`` times its best); ``"patience"``: early stopping.
    """
    robust = row.get("val_robust_acc")
    if robust is not None:
        if adversarial.collapsed(robust, state["best_robust"], c.overfit_guard):
            kept = row["epoch"] - 1
            state["collapsed"] = {
                "epoch": row["epoch"], "kept_epoch": kept, "val_robust_acc": robust,
                "best_val_robust_acc": state["best_robust"],
            }  # fmt: skip
            reporter.note(
                f"catastrophic overfitting at epoch {row['epoch']}: validation robust accuracy "
                f"fell to {robust:.4f} (best {state['best_robust']:.4f}); stopped, keeping the "
                f"weights of epoch {kept}"
            )
            return "collapsed"
        state["best_robust"] = max(robust, state["best_robust"] or 0.0)
    score = row["val_loss"] if c.monitor == "val_loss" else -row["val_robust_acc"]
    if score < state["best_val"]:
        state["best_val"], state["bad_epochs"] = score, 0
    else:
        state["bad_epochs"] += 1
    if c.patience is not None and state["bad_epochs"] >= c.patience:
        return "patience"
    return None


def _restore(out, model, optimizer, scheduler, shuffle, step) -> dict:
    """Load the checkpoint in ``out`` into the training objects; return its loop state."""
    ck = runs.load_checkpoint(out / runs.CHECKPOINT)
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    shuffle.set_state(ck["rng"]["shuffle"])
    _set_rng_state(ck["rng"], step.device)
    if "scaler" in ck["extra"] and step.scaler.is_enabled():
        step.scaler.load_state_dict(ck["extra"]["scaler"])
    state = {"best_robust": None, "collapsed": None}
    keys = ("epoch", "rows", "best_val", "bad_epochs", "seconds", "best_robust", "collapsed")
    state.update({k: ck["extra"][k] for k in keys if k in ck["extra"]})
    return state


def _train_epoch(c, step, optimizer, x_train, y_train, shuffle, epoch, out, reporter):
    """One pass over the training set; returns (summed loss, correct predictions).

    Under DDP the sums are over every rank's part, and every rank sees the
    same (global) loss, so a diverging loss stops all ranks at the same batch.
    """
    step.train_model.train()
    totals = torch.zeros(2, dtype=torch.float64)
    eps = adversarial.eps_at(c.adv_eps or 0.0, c.adv_eps_warmup, epoch)
    size = adversarial.step_size(c.adversarial, eps, c.adv_steps or 1, c.adv_step_size)
    for b, idx in enumerate(batches(len(y_train), c.batch_size, shuffle)):
        part, weight = step.shard(idx)
        part = part.to(x_train.device)
        xb, yb = x_train[part], y_train[part]
        loss, logits = adversarial.training_loss(
            step.train_model, xb, yb, mode=c.adversarial, eps=eps, norm=c.adv_norm,
            steps=c.adv_steps or 1, size=size, beta=c.trades_beta or 0.0,
            random_start=c.adv_random_start, attack_model=step.attack_model,
            generator=adversarial.batch_generator(
                c.seed, epoch, b, shard=step.rank, shards=step.world
            ),
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(loss if step.world == 1 else loss * weight).backward()
        n = len(yb) if weight else 0
        right = (logits.argmax(1) == yb).sum().item() if n else 0
        batch = step.total(torch.tensor([loss.item() * n, right, n], dtype=torch.float64))
        value = float(batch[0] / batch[2])
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss became {value} at epoch {epoch + 1}, batch {b + 1}; "
                f"{_kept(out, epoch)}; try a lower --lr"
            )
        step.scaler.step(optimizer)
        step.scaler.update()
        totals += batch[:2]
        reporter.batch_end(value, float(batch[1] / batch[2]))
    return float(totals[0]), int(totals[1])


def _finish(c, cfg, data, model, out, device, state, stop) -> dict:
    """Test the final (or the best, or the last good) weights; write summary.json."""
    if c.patience is not None or stop == "collapsed":
        runs.load_weights(model, out / runs.WEIGHTS)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, 512)
    summary = {
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "epochs_completed": len(state["rows"]),
        "stopped_early": stop is not None,
        "seconds": state["seconds"],
        **runs.timing_context(device),
        "world_size": distributed.world()[1],
        "config_hash": runs.config_hash(cfg),
    }
    if c.adversarial != "none":
        summary["adversarial"] = c.adversarial
        summary["catastrophic_overfitting"] = state["collapsed"]
    runs.write_json(out / runs.SUMMARY, summary)
    (out / runs.CHECKPOINT).unlink(missing_ok=True)
    return summary


def _kept(out: Path, completed: int) -> str:
    """What ``out`` holds after a failure in epoch ``completed + 1``."""
    if completed == 0:
        return f"no epoch completed, so {out} holds no weights"
    return f"{out} keeps the last good checkpoint (epoch {completed})"


def run_status(config: TrainConfig, out: str | Path, data: Dataset) -> str:
    """What ``out`` holds for ``config``: ``absent``, ``complete``, ``partial`` or ``different``.

    ``partial`` is a run with the same settings that ``--resume`` can continue;
    ``different`` is a run made with other settings (or unreadable).
    """
    out = Path(out)
    if not (out / runs.CONFIG).exists():
        return "absent"
    try:
        old = runs.read_json(out / runs.CONFIG)
    except runs.RunError:
        return "different"
    cfg = make_config_dict(config.resolved(), data, torch.device("cpu"), out)
    if not isinstance(old, dict) or runs.config_hash(old) != runs.config_hash(cfg):
        return "different"
    if _data_changed(old, cfg):
        return "different"
    if (out / runs.SUMMARY).exists() and not (out / runs.CHECKPOINT).exists():
        return "complete"
    return "partial"
