"""``advkit train``: train a course model and write a run directory."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

import attacks
import models

from .. import distributed, runs
from ..adversarial import MODES
from ..data import BUILTIN, TORCHVISION, is_dataset_name
from ..train import (
    AMP,
    DEFAULT_GAMMA,
    DEFAULT_LR,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    Reporter,
    TrainConfig,
    TrainingDiverged,
    default_epochs,
    train,
)
from .common import (
    Failure,
    device_option,
    fail_cleanly,
    join_process_group,
    log,
    not_empty,
    one_line,
    progress,
)


class BarReporter(Reporter):
    """One progress bar per epoch with running loss and accuracy; a log line at its end."""

    def __init__(self) -> None:
        self.bar: Any = None  # the epoch's progress bar, open between epoch_start and epoch_end

    def start(self, config: dict, out, resumed_epoch: int) -> None:
        c, t = config["model"], config["training"]
        resumed = f", resuming after epoch {resumed_epoch}" if resumed_epoch else ""
        world = t.get("world_size", 1)
        processes = f" x {world} processes" if world > 1 else ""
        log(
            f"training {c['name']} on {config['dataset']['name']} {tuple(c['input_shape'])} "
            f"with {config['optimizer']['name']} for {t['epochs']} epochs on {t['device']}{processes}"
            f" -> {out}{resumed}"
        )

    def epoch_start(self, epoch: int, epochs: int, n_batches: int) -> None:
        self.bar = progress(n_batches, f"epoch {epoch}/{epochs}", "batch")
        self.loss = self.acc = 0.0
        self.seen = 0

    def batch_end(self, loss: float, acc: float) -> None:
        self.seen += 1
        self.loss += (loss - self.loss) / self.seen
        self.acc += (acc - self.acc) / self.seen
        self.bar.update(1)
        if self.seen % 5 == 0:
            self.bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{self.acc:.3f}", refresh=False)

    def epoch_end(self, row: dict) -> None:
        self.bar.close()
        robust = f" robust {row['val_robust_acc']:.4f}" if "val_robust_acc" in row else ""
        log(
            f"epoch {row['epoch']:3d}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
            f"{robust}  {row['seconds']:.1f}s"
        )

    def note(self, message: str) -> None:
        log(message)


def _typed(name: str) -> bool:
    """Whether the user gave option ``name`` (not its default)."""
    source = click.get_current_context().get_parameter_source(name)
    return source is not click.core.ParameterSource.DEFAULT


def _table(values: dict) -> str:
    """``sgd 0.1, adam 0.001``: a defaults table for --help."""
    return ", ".join(f"{k} {v:g}" for k, v in values.items())


LR_HELP = f"Learning rate [default per optimizer: {_table(DEFAULT_LR)}]."
EPOCHS_HELP = (
    f"Epochs [default per model: {_table({m: default_epochs(m) for m in models.available()})}]."
)
GAMMA_HELP = (
    "Decay factor of step (per quarter of the run after warm-up) and exponential (per epoch) "
    f"[default: {_table(DEFAULT_GAMMA)}]; the other schedules take none."
)


def interrupted_message(out: Path) -> str:
    """What an interrupted ``advkit train`` left in ``out``, and what to run next."""
    if (out / runs.CHECKPOINT).exists():
        try:
            done = len(runs.read_jsonl(out / runs.METRICS))
        except runs.RunError:
            done = 0
        saved = f"epoch {done} is saved" if done else "the last completed epoch is saved"
        return f"interrupted; {saved}: rerun with --resume to continue ({out})"
    if (out / runs.SUMMARY).exists():
        return f"interrupted after training finished; {out} holds the complete run"
    if (out / runs.CONFIG).exists():
        return (
            "interrupted before the first epoch finished, so no epoch is saved: "
            f"rerun with --resume to start over ({out})"
        )
    return f"interrupted before anything was written to {out}: run the command again"


def _dataset(ctx, param, value: str) -> str:
    if not is_dataset_name(value):
        raise click.BadParameter(
            f"{value!r} is not one of {', '.join(BUILTIN + TORCHVISION)} nor a .npz file"
        )
    return value


def _options(ctx, param, value: str | None) -> dict:
    if not value:
        return {}
    try:
        options = json.loads(value)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON ({e})") from None
    if not isinstance(options, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"hidden\": [128]}'")
    return options


@click.command(no_args_is_help=False)
@click.option(
    "--model",
    "model",
    default="bncnn",
    show_default=True,
    type=click.Choice(models.available()),
    help="Which course model to train.",
)
@click.option(
    "--model-options",
    callback=_options,
    metavar="JSON",
    help="Model constructor options as JSON, e.g. '{\"depth\": 4}'.",
)
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    callback=_dataset,
    help=f"{', '.join(BUILTIN + TORCHVISION)}, or a path to a .npz file.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where torchvision datasets live [default: $ADVKIT_DATA, else ~/.cache/advkit].",
)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(OPTIMIZERS))
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help=LR_HELP,
)
@click.option(
    "--weight-decay",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="L2 regularization strength.",
)
@click.option(
    "--momentum",
    type=click.FloatRange(0, 1, max_open=True),
    help="Momentum for sgd/momentum/rmsprop [default: 0.9 for momentum, else 0].",
)
@click.option(
    "--schedule",
    default="cosine",
    show_default=True,
    type=click.Choice(SCHEDULES),
    help="Learning-rate schedule per epoch.",
)
@click.option(
    "--gamma",
    type=click.FloatRange(0, 1, min_open=True),
    help=GAMMA_HELP,
)
@click.option(
    "--warmup-epochs",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Linear warm-up epochs before the schedule.",
)
@click.option("--epochs", type=click.IntRange(min=1), help=EPOCHS_HELP)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    help="Stop early after this many epochs without a lower validation loss (keeps the best weights).",
)
@click.option(
    "--adversarial",
    default="none",
    show_default=True,
    type=click.Choice(MODES),
    help="Adversarial training: pgd (Madry), fgsm-rs (FGSM from a random start, with a "
    "catastrophic-overfitting guard), trades (CE + beta KL).",
)
@click.option(
    "--adv-eps",
    type=click.FloatRange(min=0, min_open=True),
    help="Training budget in pixel units (required with --adversarial).",
)
@click.option(
    "--adv-norm",
    default="linf",
    show_default=True,
    type=click.Choice(attacks.NORMS),
    help="Norm of the training budget.",
)
@click.option(
    "--adv-steps",
    type=click.IntRange(min=1),
    help="Steps of the training attack [default: pgd 10, trades 10, fgsm-rs 1].",
)
@click.option(
    "--adv-step-size",
    type=click.FloatRange(min=0, min_open=True),
    help="Step of the training attack [default: 2.5 eps / steps; fgsm-rs 1.25 eps].",
)
@click.option(
    "--trades-beta",
    type=click.FloatRange(min=0, min_open=True),
    help="Weight of TRADES' KL term [default: 6].",
)
@click.option(
    "--adv-eps-warmup",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Epochs over which the training eps ramps up linearly.",
)
@click.option(
    "--monitor",
    default="val_loss",
    show_default=True,
    type=click.Choice(MONITORS),
    help="What --patience and the kept weights follow (val_robust_acc needs --adversarial).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**32 - 1),  # scikit-learn's split takes no other seeds
    help="Seeds the split, the initialization and the shuffling.",
)
@device_option
@click.option(
    "--amp",
    default="none",
    show_default=True,
    type=click.Choice(AMP),
    help="Mixed precision: forward passes under autocast in bf16 or fp16 (the loss in float32; "
    "fp16 losses are scaled on CUDA).",
)
@click.option(
    "--out", required=True, type=click.Path(), callback=not_empty, help="Run directory to write."
)
@click.option(
    "--resume", is_flag=True, help="Continue the run in --out from its last completed epoch."
)
@click.option("--force", is_flag=True, help="Replace the run that --out holds.")
@fail_cleanly
def train_command(
    model,
    model_options,
    dataset,
    data_dir,
    optimizer,
    lr,
    weight_decay,
    momentum,
    schedule,
    gamma,
    warmup_epochs,
    epochs,
    batch_size,
    patience,
    adversarial,
    adv_eps,
    adv_norm,
    adv_steps,
    adv_step_size,
    trades_beta,
    adv_eps_warmup,
    monitor,
    seed,
    device,
    amp,
    out,
    resume,
    force,
):
    """Train a course model and write a run directory.

    The run directory holds config.json, model.safetensors and metrics.jsonl,
    updated atomically after every epoch, so an interrupted run loses nothing:
    run the same command with --resume to continue it.

    \b
    advkit train --model bncnn --optimizer adam --out runs/bncnn-adam
    advkit train --model mlp --optimizer momentum --schedule step --warmup-epochs 2 --out runs/mlp-momentum
    advkit train --model bncnn --adversarial pgd --adv-eps 0.1 --out runs/bncnn-pgd-at

    Under torchrun (torchrun --nproc-per-node N -m advkit train ...) it trains
    with DistributedDataParallel: each process takes its share of every batch
    of --batch-size samples, and process 0 writes the run directory.
    """
    if adversarial == "none" and _typed("adv_norm"):
        raise Failure("--adv-norm applies only with --adversarial pgd, fgsm-rs or trades")
    config = TrainConfig(
        model=model,
        dataset=dataset,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        schedule=schedule,
        warmup_epochs=warmup_epochs,
        gamma=gamma,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        patience=patience,
        model_options=model_options,
        data_dir=data_dir,
        adversarial=adversarial,
        adv_eps=adv_eps,
        adv_norm=adv_norm,
        adv_steps=adv_steps,
        adv_step_size=adv_step_size,
        trades_beta=trades_beta,
        adv_eps_warmup=adv_eps_warmup,
        monitor=monitor,
        amp=amp,
    )
    config.resolved()  # bad settings fail before the process group is joined
    dev = join_process_group(device)
    main_rank = distributed.is_main()
    t0 = time.perf_counter()
    try:
        summary = train(config, out, resume=resume, force=force, device=dev, reporter=BarReporter())
    except TrainingDiverged as e:
        raise Failure(one_line(e)) from None
    except RuntimeError as e:
        # torch cannot turn a huge --lr or --weight-decay into float32 (Adam divides the
        # rate by 1 - beta1 first): the same failure as a diverging loss.
        if "without overflow" not in str(e):
            raise
        raise Failure(
            f"training overflowed float32 ({one_line(e)}); try a lower --lr or --weight-decay"
        ) from None
    except KeyboardInterrupt:
        if main_rank:
            log(interrupted_message(Path(out)))
        sys.exit(130)
    if not main_rank:
        return
    if summary.get("catastrophic_overfitting"):
        co = summary["catastrophic_overfitting"]
        log(f"catastrophic overfitting at epoch {co['epoch']}: kept epoch {co['kept_epoch']}")
    click.echo(
        f"{out}: test accuracy {summary['test_accuracy']:.4f}, "
        f"{summary['parameters']:,} parameters, {summary['epochs_completed']} epochs, "
        f"{time.perf_counter() - t0:.1f}s"
    )
