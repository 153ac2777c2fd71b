"""Attack a saved run: a robustness curve, a few gallery examples, files in the run.

``attack_run`` loads a run directory, attacks its test (or validation) split
over a grid of budgets, and writes ``attacks/NAME.json`` (the curve with the
attack's full settings), ``attacks/NAME.examples.safetensors`` (a handful of
clean / adversarial pairs for galleries) and ``figures/NAME.png``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

import attacks

from . import __version__, runs
from .data import load_dataset
from .evaluate import Curve, robustness_curve

ATTACK_NAMES = ("fgsm", "pgd")
TARGETS = ("none", "random", "least-likely")
SPLITS = ("test", "val")


def attack_name(settings: dict) -> str:
    """File stem naming an attack setting, e.g. ``pgd-linf-untargeted``, ``fgsm-l2-target-random``."""
    target = settings.get("target")
    parts = [
        settings["attack"],
        settings["norm"],
        "untargeted" if target is None else f"target-{target}",
    ]
    if settings.get("loss", "ce") != "ce":
        parts.append(settings["loss"])
    if settings.get("split", "test") != "test":
        parts.append(settings["split"])
    return "-".join(str(p) for p in parts)


def settings_key(run_config: dict, settings: dict) -> str:
    """Hash of what determines an attack's result: the run's config and the attack settings."""
    blob = json.dumps(
        {"run": runs.config_hash(run_config), "attack": settings}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def find_complete(run_dir: str | os.PathLike, settings: dict) -> dict | None:
    """The stored record of this exact attack on this exact run, if there is one."""
    run_dir = Path(run_dir)
    path = run_dir / "attacks" / f"{attack_name(settings)}.json"
    if not path.exists() or not (run_dir / runs.CONFIG).exists():
        return None
    try:
        record = runs.read_json(path)
        config = runs.read_json(run_dir / runs.CONFIG)
    except runs.RunError:
        return None
    if record.get("key") != settings_key(config, settings):
        return None
    return record


def make_settings(
    *,
    attack: str = "pgd",
    norm: str = "linf",
    epsilons: list[float],
    target: str | int | None = None,
    loss: str = "ce",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """The full, JSON-ready settings of an attack on a run (FGSM ignores the PGD options)."""
    if attack not in ATTACK_NAMES:
        raise ValueError(f"attack must be one of {ATTACK_NAMES}, got {attack!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    pgd_only = {
        "steps": steps,
        "step_size": step_size,
        "restarts": restarts,
        "random_start": random_start,
    }
    if attack == "fgsm":
        pgd_only = {k: None for k in pgd_only}
    return {
        "attack": attack,
        "norm": norm,
        "epsilons": [float(e) for e in epsilons],
        "target": target,
        "loss": loss,
        **pgd_only,
        "split": split,
        "limit": limit,
        "batch_size": batch_size,
        "seed": seed,
    }


def attack_run(
    run_dir: str | os.PathLike,
    settings: dict,
    *,
    device: str | torch.device = "cpu",
    progress=None,
    n_examples: int = 8,
    figure: bool = True,
    data=None,
) -> dict:
    """Attack the model of ``run_dir`` with ``settings`` (from :func:`make_settings`).

    Args:
        run_dir: a run directory written by ``advkit train``.
        settings: the attack's settings.
        device: where to run the model.
        progress: ``progress(eps_index, done, total)``, see ``robustness_curve``.
        n_examples: how many gallery examples to store.
        figure: also draw ``figures/NAME.png``.
        data: the run's dataset, already loaded (saves reloading it).

    Returns:
        The record written to ``attacks/NAME.json``.

    Raises:
        ValueError: bad settings, or a run that is missing or corrupt (RunError).
    """
    run_dir = Path(run_dir)
    model, config = runs.load_run(run_dir, device=device)
    if data is None:
        ds = config["dataset"]
        data = load_dataset(ds["name"], data_dir=ds.get("data_dir"), seed=ds["seed"])
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
    x, y = data.split(settings["split"])
    if settings["limit"] is not None:
        x, y = x[: settings["limit"]], y[: settings["limit"]]
    if len(y) == 0:
        raise ValueError(f"the {settings['split']} split of {run_dir} is empty: nothing to attack")

    curve = robustness_curve(
        model, x, y, settings["epsilons"], attack=settings["attack"], norm=settings["norm"],
        target=settings["target"], batch_size=settings["batch_size"], seed=settings["seed"],
        device=device, progress=progress, **_attack_kw(settings),
    )  # fmt: skip
    name = attack_name(settings)
    eps = gallery_eps(curve)
    examples = gallery_examples(model, x, y, settings, eps, n_examples, curve, device)
    examples_file = f"{name}.examples.safetensors"
    with runs.atomic_path(run_dir / "attacks" / examples_file) as tmp:
        save_file(examples, str(tmp), metadata={"eps": str(eps)})
    record: dict[str, Any] = {
        "name": name,
        "run": run_dir.name,
        "model": config["model"]["name"],
        "optimizer": config["optimizer"]["name"],
        "dataset": config["dataset"]["name"],
        "key": settings_key(config, settings),
        "settings": settings,
        "curve": curve.to_dict(),
        "examples": {"file": examples_file, "eps": eps},
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {"advkit": __version__, "torch": torch.__version__},
    }
    if figure:
        from .report import attack_figure, save_figure  # matplotlib only when drawing

        save_figure(attack_figure(record, examples), run_dir / "figures" / f"{name}.png")
    # The record last: once it exists, so do its examples and figure, even if the
    # process is interrupted or killed between the files.
    runs.write_json(run_dir / "attacks" / f"{name}.json", record)
    return record


def _attack_kw(settings: dict) -> dict:
    kw: dict[str, Any] = {"loss": settings["loss"]}
    if settings["attack"] == "pgd":
        kw.update(
            steps=settings["steps"],
            step_size=settings["step_size"],
            restarts=settings["restarts"],
            random_start=settings["random_start"],
        )
    return kw


def gallery_eps(curve: Curve) -> float:
    """The smallest budget that fools at least half the samples, else the largest."""
    for eps, rate in zip(curve.epsilons, curve.success_rate, strict=True):
        if eps > 0 and rate >= 0.5:
            return eps
    return curve.epsilons[-1]


def gallery_examples(model, x, y, settings, eps, n, curve, device) -> dict[str, torch.Tensor]:
    """Attack the first few correctly classified samples at ``eps``; successes first."""
    from .evaluate import _targets  # same target rule as the curve

    pool = min(len(y), 8 * n)
    xb, yb = x[:pool].to(device), y[:pool].to(device)
    with torch.no_grad():
        clean = model(xb).softmax(dim=1)
    g = torch.Generator().manual_seed(settings["seed"])
    target = settings["target"]
    if isinstance(target, int):
        keep = yb != target
        xb, yb, clean = xb[keep], yb[keep], clean[keep]
    targets = _targets(target, yb.cpu(), clean.log().cpu(), g)
    t = targets.to(device) if targets is not None else None
    attack = getattr(attacks, settings["attack"])
    kw = _attack_kw(settings)
    if settings["attack"] == "pgd":
        kw["generator"] = torch.Generator(device=xb.device).manual_seed(settings["seed"])
    x_adv = attack(model, xb, yb, eps, norm=settings["norm"], target=t, **kw)
    with torch.no_grad():
        adv = model(x_adv).softmax(dim=1)
    pred_clean, pred_adv = clean.argmax(1), adv.argmax(1)
    success = pred_adv != yb if t is None else pred_adv == t
    correct = pred_clean == yb
    # Correct clean predictions the attack fooled first, then the rest of the correct ones.
    order = torch.argsort((~(correct & success)).int() * 2 + (~correct).int(), stable=True)[:n]
    order = order.to(device)
    return {
        "x": xb[order].cpu().contiguous(),
        "x_adv": x_adv[order].cpu().contiguous(),
        "y": yb[order].cpu(),
        "target": (t[order] if t is not None else torch.full_like(yb[order], -1)).cpu(),
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
