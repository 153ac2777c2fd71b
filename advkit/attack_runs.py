"""Attack a saved run: a robustness curve, a few gallery examples, files in the run.

``attack_run`` loads a run directory, attacks its test (or validation) split
over a grid of budgets, and writes ``attacks/NAME.json`` (an `AttackRecord`:
the curve with the attack's full settings), ``attacks/NAME.examples.safetensors``
(a handful of the curve's own clean / adversarial pairs for galleries) and
``figures/NAME.png``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import attacks

from . import runs
from .accel import accelerate, describe
from .data import Dataset, load_run_dataset
from .defenses import defend
from .distributed import distributed_curve, is_main, world
from .evaluate import Curve
from .records import RECORD_DIR, AttackRecord, AttackSettings, RecordError, read_record, record_path


def find_complete(run_dir: str | os.PathLike, settings: AttackSettings) -> AttackRecord | None:
    """The stored record of exactly these settings on the run as it is now, if there is one."""
    path = record_path(run_dir, settings)
    config_path = Path(run_dir) / runs.CONFIG
    if not path.exists() or not config_path.exists():
        return None
    try:
        record = read_record(path)
        config = runs.read_json(config_path)
    except (RecordError, runs.RunError):
        return None
    if record.run_key != runs.config_hash(config) or record.settings != settings:
        return None  # the run was retrained since (or a hash collision): stale
    return record


def attack_run(
    run_dir: str | os.PathLike,
    settings: AttackSettings,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    n_examples: int = 8,
    figure: bool = True,
    data: Dataset | None = None,
    dataset: str | os.PathLike | None = None,
    allow_changed_data: bool = False,
    accel: dict[str, Any] | None = None,
) -> AttackRecord:
    """Attack the model of ``run_dir`` with ``settings`` and store the record.

    Writes ``attacks/NAME.json`` (NAME from the settings' identity, see
    `advkit.records`), its gallery examples and ``figures/NAME.png``; a record
    of the same settings is replaced (callers decide whether to skip it first,
    see `find_complete`).

    Args:
        run_dir: a run directory written by ``advkit train``.
        settings: the attack's settings.
        device: where to run the model.
        progress: ``progress(done, total)`` in samples, after each round of chunks
            (see `advkit.distributed.distributed_curve`).
        n_examples: how many gallery examples to store.
        figure: also draw ``figures/NAME.png``.
        data: the run's dataset, already loaded (saves reloading it).
        dataset: read the run's data from here (it moved) instead of the path
            in its config.json (see `advkit.data.load_run_dataset`).
        allow_changed_data: attack data whose sha256 differs from the one
            recorded at training (with a warning) instead of refusing it.
        accel: options of `advkit.accel.accelerate` (``amp``, ``channels_last``,
            ``compile``); noted beside the device in the record.

    Under ``torchrun`` (a process group is initialized) every rank calls it
    alike: the samples are shared out across the ranks, every rank gets the
    record, and only rank 0 writes files. Progress is kept in
    ``attacks/.progress/NAME.json`` while the curve is computed, so an
    interrupted run continues where it stopped (on any number of processes).

    Raises:
        ValueError: bad settings, or a run that is missing or corrupt (RunError).
    """
    run_dir = Path(run_dir)
    model, config = runs.load_run(run_dir, device=device)
    model = accelerate(model, device=device, **(accel or {}))
    if settings.defense is not None:  # a fresh wrapper: its draws replay from the seed
        model = defend(model, settings.defense, adaptive=settings.adaptive, seed=settings.seed)
    if data is None:
        data = load_run_dataset(run_dir, config, dataset=dataset, allow_changed=allow_changed_data)
    x, y = _split(run_dir, config, settings, data)
    curve = distributed_curve(
        model, x, y, settings.epsilons, device=device, progress=progress,
        examples=8 * n_examples, resume=progress_path(run_dir, settings),
        **settings.curve_kw(),
    )  # fmt: skip
    record = AttackRecord(
        settings=settings,
        curve=curve,
        run=run_dir.name,
        model=config["model"]["name"],
        optimizer=config["optimizer"]["name"],
        dataset=config["dataset"]["name"],
        run_key=runs.config_hash(config),
        examples={"file": f"{settings.name}.examples.safetensors", "eps": gallery_eps(curve)},
        world_size=world()[1],
        **runs.timing_context(device),
    )
    if describe(**(accel or {})):
        record.device += f" ({describe(**(accel or {}))})"
    if is_main():
        _write(run_dir, record, model, n_examples, device, figure)
    return record


def progress_path(run_dir: str | os.PathLike, settings: AttackSettings) -> Path:
    """Where an attack keeps its progress while it runs: ``attacks/.progress/NAME.json``."""
    return Path(run_dir) / RECORD_DIR / ".progress" / f"{settings.name}.json"


def _write(
    run_dir: Path,
    record: AttackRecord,
    model: torch.nn.Module,
    n_examples: int,
    device: str | torch.device,
    figure: bool,
) -> None:
    """The record's examples, figure and JSON, in that order."""
    settings, curve = record.settings, record.curve
    eps = record.examples["eps"]
    examples = gallery_examples(model, curve, eps, n_examples, device)
    with runs.atomic_path(run_dir / RECORD_DIR / record.examples["file"]) as tmp:
        save_file(examples, str(tmp), metadata={"eps": str(eps)})
    if figure:
        from .report import attack_figure, save_figure  # matplotlib only when drawing

        figure_path = run_dir / "figures" / f"{settings.name}.png"
        save_figure(attack_figure(record.to_dict(), examples), figure_path)
    # The record last: once it exists, so do its examples and figure, even if the
    # process is interrupted or killed between the files.
    runs.write_json(record_path(run_dir, settings), record.to_dict())


def _split(
    run_dir: Path, config: dict, settings: AttackSettings, data: Dataset
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples to attack: the settings' split of the run's dataset, limited."""
    spec = config["model"]
    if (
        list(data.input_shape) != list(spec["input_shape"])
        or data.num_classes != spec["num_classes"]
    ):
        # A .npz replaced since training: attacking it would fail deep in the model or
        # measure the wrong thing.
        raise runs.RunError(
            f"dataset {config['dataset']['name']!r} now has images {list(data.input_shape)} "
            f"and {data.num_classes} classes, but the model of {run_dir} was trained on "
            f"{list(spec['input_shape'])} and {spec['num_classes']} classes"
        )
    x, y = data.split(settings.split)
    if settings.limit is not None:
        x, y = x[: settings.limit], y[: settings.limit]
    if len(y) == 0:
        raise ValueError(f"the {settings.split} split of {run_dir} is empty: nothing to attack")
    return x, y


def gallery_eps(curve: Curve) -> float:
    """The smallest budget that fools at least half the samples, else the largest."""
    for eps, rate in zip(curve.epsilons, curve.success_rate, strict=True):
        if eps > 0 and rate >= 0.5:
            return eps
    return curve.epsilons[-1]


def gallery_examples(
    model: torch.nn.Module, curve: Curve, eps: float, n: int, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """A few of the curve's own samples at ``eps``: correct ones it fooled first.

    The adversarial inputs are those the curve counted (`Curve.examples`), so
    the gallery shows exactly the targets and points the curve attacked.
    """
    kept = curve.examples
    assert kept is not None, "robustness_curve(..., examples=...) keeps the gallery's pool"
    column = curve.epsilons.index(eps)
    xb, x_adv = kept["x"].to(device), kept["x_adv"][:, column].to(device)
    yb, t = kept["y"].to(device), kept["target"].to(device)
    with torch.no_grad(), attacks.eval_mode(model):
        clean = attacks.logits_of(model(xb)).softmax(dim=1)
        adv = attacks.logits_of(model(x_adv)).softmax(dim=1)
    pred_clean, pred_adv = clean.argmax(1), adv.argmax(1)
    success = attacks.losses.prediction_succeeded(pred_adv, yb, None if (t < 0).all() else t)
    correct = pred_clean == yb
    # Correct clean predictions the attack fooled first, then the rest of the correct ones.
    order = torch.argsort((~(correct & success)).int() * 2 + (~correct).int(), stable=True)[:n]
    return {
        "x": xb[order].cpu().contiguous(),
        "x_adv": x_adv[order].cpu().contiguous(),
        "y": yb[order].cpu(),
        "target": t[order].cpu(),
        "pred_clean": pred_clean[order].cpu(),
        "pred_adv": pred_adv[order].cpu(),
        "conf_clean": clean.max(1).values[order].cpu(),
        "conf_adv": adv.max(1).values[order].cpu(),
    }


def _grid(stop: float, count: int) -> list[float]:
    return [round(stop * i / (count - 1), 6) for i in range(count)]


# Budgets that span "no effect" to "nearly everything fooled" for each dataset.
EPSILON_GRIDS: dict[str, dict[str, list[float]]] = {
    "digits": {"linf": _grid(0.3, 7), "l2": _grid(2.0, 9)},
    "mnist": {"linf": _grid(0.4, 9), "l2": _grid(4.0, 9)},
    "fashion-mnist": {"linf": _grid(0.2, 9), "l2": _grid(2.0, 9)},
    "cifar10": {"linf": _grid(16 / 255, 9), "l2": _grid(1.0, 9)},
}


def default_epsilons(dataset: str, norm: str) -> list[float]:
    """The budget grid for a dataset and norm (user .npz files get the digits grid)."""
    return list(EPSILON_GRIDS.get(dataset, EPSILON_GRIDS["digits"])[norm])
