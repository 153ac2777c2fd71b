"""The record of an attack run: its settings, its identity, its file name.

An attack record is `RUN/attacks/NAME.json`: the robustness curve of one
attack setting on one trained run, written by `advkit attack` and the course
pipeline and read by the report. Its identity is every setting that changes
its numbers (the attack and each of its options, the eps grid, the target,
the split, the sample limit, the batch size, the seed), so a run can hold PGD-10
and PGD-50, or 20 and 360 samples, side by side: a different setting is a
different file, never an overwrite. `NAME` reads as the setting and ends with a
short hash of that identity, e.g. `pgd-linf-untargeted-1a2b3c4d`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .defenses import canonical_adaptive, canonical_defense
from .evaluate import TARGETS, Curve, attack_options
from .runs import RunError

SPLITS = ("test", "val")
RECORD_DIR = "attacks"

# The fields of AttackSettings that are not options of the attack itself.
_FIELDS = (
    "attack", "norm", "epsilons", "target", "split", "limit", "batch_size", "seed", "defense",
    "adaptive",
)  # fmt: skip


class RecordError(RunError):
    """A record file that is missing, corrupt or not an attack record."""


@dataclass(frozen=True)
class AttackSettings:
    """Everything that decides an attack run's numbers, checked once when made.

    Attributes:
        attack: A name in `attacks.ATTACKS`.
        norm: `"linf"` or `"l2"`.
        epsilons: The budget grid, increasing.
        target: None, `"random"`, `"least-likely"` or a class index.
        options: The attack's own keyword options (`loss`, `steps`, ...), every
            default filled in from its signature, JSON-ready.
        split: `"test"` or `"val"`.
        limit: Attack only the first this many samples of the split (None: all).
        batch_size: Samples per attack call.
        seed: Seeds random targets and random starts (and a defense's draws).
        defense: The passive defense the model is wrapped in (`advkit.defenses`,
            e.g. ``"jpeg:75+blur:1"``), None for the bare model.
        adaptive: What the attack's gradients see through the defense: None
            (naive), ``"bpda"`` or ``"eot:N"``. Both are part of the identity
            only when set, so records without a defense keep their names.
    """

    attack: str
    norm: str
    epsilons: tuple[float, ...]
    target: str | int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    limit: int | None = None
    batch_size: int = 256
    seed: int = 0
    defense: str | None = None
    adaptive: str | None = None

    @classmethod
    def make(
        cls,
        *,
        attack: str = "pgd",
        norm: str = "linf",
        epsilons: list[float] | tuple[float, ...],
        target: str | int | None = None,
        split: str = "test",
        limit: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        defense: str | None = None,
        adaptive: str | None = None,
        **options: Any,
    ) -> AttackSettings:
        """Check the settings and fill in the attack's defaults.

        Raises:
            ValueError: For an unknown attack, an option it does not take, or a
                bad split, limit or target; the message names it.
        """
        defaults = attack_options(attack)
        defaults.pop("early_stop", None)  # the curve decides (see robustness_curve)
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(f"{attack} does not take the option(s) {', '.join(unknown)}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
        if not (target is None or target in TARGETS or isinstance(target, int)):
            raise ValueError(f"target must be None, {TARGETS} or a class index, got {target!r}")
        if adaptive not in (None, "none") and defense is None:
            raise ValueError(f"adaptive={adaptive!r} needs a defense to adapt to")
        filled = {name: _json_ready(value) for name, value in {**defaults, **options}.items()}
        return cls(
            attack, norm, tuple(float(e) for e in epsilons), target, filled, split, limit,
            batch_size, seed, canonical_defense(defense), canonical_adaptive(adaptive),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready settings: the fields and the attack's options side by side."""
        d: dict[str, Any] = {"attack": self.attack, "norm": self.norm}
        d.update(epsilons=list(self.epsilons), target=self.target, **self.options)
        d.update(split=self.split, limit=self.limit, batch_size=self.batch_size, seed=self.seed)
        if self.defense is not None:
            d.update(defense=self.defense, adaptive=self.adaptive)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackSettings:
        """Settings written by `to_dict`: every key that is not a field is an option."""
        missing = [name for name in ("attack", "norm", "epsilons") if name not in d]
        if missing:
            raise ValueError(f"settings lack {missing}")
        fields = {name: d[name] for name in _FIELDS if name in d}
        options = {k: v for k, v in d.items() if k not in _FIELDS}
        fields["epsilons"] = tuple(float(e) for e in fields["epsilons"])
        return cls(**fields, options=options)

    @property
    def key(self) -> str:
        """A short hash of the identity: every setting that changes the numbers."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    @property
    def name(self) -> str:
        """The record's file stem: readable settings, then the identity's hash.

        E.g. `pgd-linf-untargeted-1a2b3c4d`, `fgsm-l2-target-random-margin-val-5e6f7a8b`.
        """
        target = "untargeted" if self.target is None else f"target-{self.target}"
        parts = [self.attack, self.norm, target]
        if self.options.get("loss", "ce") != "ce":
            parts.append(str(self.options["loss"]))
        if self.split != "test":
            parts.append(self.split)
        if self.defense is not None:
            parts.append(self.defense.replace(":", "").replace("+", "-").replace(".", "p"))
            parts.append((self.adaptive or "naive").replace(":", ""))
        return "-".join([*parts, self.key])

    def curve_kw(self) -> dict[str, Any]:
        """Keyword arguments of `robustness_curve` for these settings."""
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        return dict(
            attack=self.attack, norm=self.norm, target=self.target,
            batch_size=self.batch_size, seed=self.seed, **options,
        )  # fmt: skip


@dataclass
class AttackRecord:
    """One stored attack run: settings, curve and where it came from.

    Attributes:
        settings: What was run (stored once: not again inside the curve).
        curve: The robustness curve.
        run: The run directory's name; `model`, `optimizer`, `dataset` from its config.
        run_key: The hash of the run's config when it was attacked: a record
            whose run was retrained since is stale.
        examples: `{"file": ..., "eps": ...}`, the gallery file beside the record.
        created: UTC time of writing; `versions`: of advkit and torch;
            `threads` and `device`: what `curve.seconds` was measured with;
            `world_size`: how many processes computed it (torch.distributed).
    """

    settings: AttackSettings
    curve: Curve
    run: str
    model: str
    optimizer: str
    dataset: str
    run_key: str
    examples: dict[str, Any]
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    versions: dict[str, str] = field(
        default_factory=lambda: {"advkit": __version__, "torch": torch.__version__}
    )
    threads: int = field(default_factory=torch.get_num_threads)
    device: str = "cpu"
    world_size: int = 1

    @property
    def name(self) -> str:
        return self.settings.name

    def to_dict(self) -> dict[str, Any]:
        curve = self.curve.to_dict()
        curve.pop("settings")  # stored once, at the top
        curve["cost"] = self.curve.cost
        return {
            "name": self.name,
            "run": self.run,
            "model": self.model,
            "optimizer": self.optimizer,
            "dataset": self.dataset,
            "run_key": self.run_key,
            "settings": self.settings.to_dict(),
            "curve": curve,
            "examples": self.examples,
            "created": self.created,
            "versions": self.versions,
            "threads": self.threads,
            "device": self.device,
            "world_size": self.world_size,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "record") -> AttackRecord:
        """Check a record read from disk, once, and type it.

        Raises:
            RecordError: Naming `source` and what is wrong.
        """
        try:
            _check_layout(d)
            settings = AttackSettings.from_dict(d["settings"])
            curve = Curve.from_dict({**d["curve"], "settings": d["settings"]})
        except (ValueError, TypeError, KeyError) as e:
            raise RecordError(f"{source} is not an attack record ({e})") from None
        return cls(
            settings=settings,
            curve=curve,
            run=str(d["run"]),
            model=str(d["model"]),
            optimizer=str(d["optimizer"]),
            dataset=str(d["dataset"]),
            run_key=str(d.get("run_key", d.get("key", ""))),
            examples=dict(d.get("examples") or {}),
            created=str(d.get("created", "")),
            versions=dict(d.get("versions") or {}),
            threads=int(d.get("threads", 0)),
            device=str(d.get("device", "")),
            world_size=int(d.get("world_size", 1)),
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_layout(d: Any) -> None:
    """Raise ValueError unless `d` has a record's keys and a consistent curve."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    for key in ("run", "model", "optimizer", "dataset", "settings", "curve"):
        if key not in d:
            raise ValueError(f"no {key!r}")
    curve, settings = d["curve"], d["settings"]
    if not isinstance(curve, dict) or not isinstance(settings, dict):
        raise ValueError("'curve' and 'settings' must be objects")
    lists = [curve.get(k) for k in ("epsilons", "accuracy", "success_rate")]
    if not all(isinstance(v, list) for v in lists) or not lists[0]:
        raise ValueError("the curve needs lists epsilons, accuracy and success_rate")
    eps, acc, rate = (list(v or []) for v in lists)
    if not (len(eps) == len(acc) == len(rate)):
        raise ValueError("the curve's lists differ in length")
    if not all(_number(v) for v in [*eps, *acc, *rate]):
        raise ValueError("the curve holds values that are not finite numbers")
    if eps != sorted(eps) or eps[0] < 0:
        raise ValueError("the curve's epsilons must be increasing and >= 0")
    if not all(0 <= v <= 1 for v in [*acc, *rate]):
        raise ValueError("accuracies must lie in [0, 1]")
    if settings.get("norm") not in ("linf", "l2"):
        raise ValueError(f"unknown norm {settings.get('norm')!r}")


def record_path(run_dir: str | os.PathLike, settings: AttackSettings) -> Path:
    """Where the record of `settings` on the run lives."""
    return Path(run_dir) / RECORD_DIR / f"{settings.name}.json"


def read_record(path: str | Path) -> AttackRecord:
    """Read and check a record file.

    Raises:
        RecordError: The file is missing, not JSON, or not an attack record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path} is not valid JSON ({e})") from None
    return AttackRecord.from_dict(data, str(path))


def _json_ready(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value
