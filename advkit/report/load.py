"""Reading runs for the report: run directories, attack records, gallery examples
and training metrics, as typed objects.

This is the only module of the report that touches the raw JSON of a run
(``config.json``, ``metrics.jsonl``, ``summary.json``, ``attacks/*.json``);
everything else works on :class:`ReportRun`, :class:`AttackRecord` and
:class:`Curve`. Records are checked once, here, when they are read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import runs
from ..evaluate import Curve as StoredCurve
from ..records import AttackRecord as StoredRecord
from ..runs import RunError
from .style import NORM_ORDER, attack_title, norm_name, rank, safe, target_label, target_slug

DEFAULT_SPLIT = "test"
EXAMPLE_KEYS = ("x", "x_adv", "y", "pred_clean", "pred_adv", "conf_clean", "conf_adv")
"""Tensors every gallery file holds (``target`` is optional: -1 for untargeted)."""


class Setting(NamedTuple):
    """What groups attack records into one robustness figure."""

    attack: str
    norm: str
    target: Any  # None, "random", "least-likely" or a class index
    loss: str
    split: str = DEFAULT_SPLIT

    @property
    def slug(self) -> str:
        """File-name part, as the record names: ``pgd-linf-untargeted``, ``pgd-l2-target-3-lecture-val``."""
        parts = [self.attack, self.norm, target_slug(self.target)]
        if self.loss != "ce":
            parts.append(self.loss)
        if self.split != DEFAULT_SPLIT:
            parts.append(self.split)
        return safe("-".join(str(p) for p in parts))

    @property
    def title(self) -> str:
        """Human name: ``PGD L∞ untargeted``, ``FGSM L2 targeted (random), loss margin``."""
        name = f"{attack_title(self.attack)} {norm_name(self.norm)} {target_label(self.target)}"
        if self.loss != "ce":
            name += f", loss {self.loss}"
        if self.split != DEFAULT_SPLIT:
            name += f", {self.split} split"
        return name

    def sort_key(self) -> tuple:
        """Untargeted first, then by attack name, norm (L∞ first), target, loss, split."""
        return (
            self.target is not None,
            self.attack,
            rank(self.norm, NORM_ORDER),
            str(self.target),
            self.loss != "ce",
            self.loss,
            self.split != DEFAULT_SPLIT,
            self.split,
        )


@dataclass
class Curve:
    """A robustness curve as the report reads it from a record."""

    epsilons: list[float]
    accuracy: list[float]
    success_rate: list[float]
    clean_accuracy: float
    n_samples: int | None = None
    n_excluded: int = 0
    seconds: float | None = None
    cost: float | None = None
    """Forward and backward passes per attacked sample, when the record counts them."""
    intervals: list[list[float]] = field(default_factory=list)
    """Per eps, the 95% Wilson interval of the accuracy."""
    flags: list[dict[str, str]] = field(default_factory=list)
    """Warnings that the evaluation may not be trusted (`advkit.trust`)."""
    per_sample: dict[str, list] = field(default_factory=dict)
    """Per sample: index, fooled_at, reached_at (see `advkit.evaluate.Curve`)."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    """Per eps: passes spent and, for staged attacks (``strong``), ``stages``."""


@dataclass
class AttackRecord:
    """One ``attacks/NAME.json`` of a run and its gallery examples."""

    path: Path
    name: str
    setting: Setting
    curve: Curve
    steps: int | None = None
    restarts: int | None = None
    examples: dict[str, torch.Tensor] | None = None
    examples_eps: float | None = None
    examples_file: str | None = None
    model: str = ""
    optimizer: str = ""
    dataset: str = ""
    stored: StoredRecord | None = None
    """The record as `advkit.records` reads it (settings, curve, provenance)."""

    @property
    def label(self) -> str:
        """Short name of the attack: ``PGD-10 untargeted``, ``PGD-10×3 margin untargeted``."""
        return f"{self.short} {target_label(self.setting.target)}"

    @property
    def short(self) -> str:
        """The attack alone: ``PGD-10``, ``PGD-10×3 margin``, ``FGSM``, ``STRONG``; a
        ``limit`` or a non-default seed is named, so two records never read the same."""
        steps = f"-{self.steps}" if self.steps else ""
        restarts = f"×{self.restarts}" if (self.restarts or 1) > 1 else ""
        loss = f" {self.setting.loss}" if self.setting.loss != "ce" else ""
        extra = ""
        if self.stored is not None and self.stored.settings.limit is not None:
            extra += f" (first {self.stored.settings.limit})"
        if self.stored is not None and self.stored.settings.seed:
            extra += f" (seed {self.stored.settings.seed})"
        return f"{attack_title(self.setting.attack)}{steps}{restarts}{loss}{extra}"

    @property
    def title(self) -> str:
        """``mlp · adam on digits: PGD L∞ untargeted, 10 steps`` (who only when known)."""
        steps = f", {self.steps} steps" if self.steps else ""
        who = " · ".join(v for v in (self.model, self.optimizer) if v)
        data = f" on {self.dataset}" if self.dataset else ""
        return (
            f"{who}{data}: {self.setting.title}{steps}" if who else f"{self.setting.title}{steps}"
        )


@dataclass
class Epoch:
    """One row of ``metrics.jsonl``: the epoch and its finite numbers."""

    epoch: Any
    values: dict[str, float]


@dataclass
class ReportRun:
    """A run directory as the report sees it."""

    path: Path
    name: str
    model: str
    optimizer: str
    dataset: str
    lr: float | None
    schedule: str | None
    warmup_epochs: int
    metric_rows: int
    """Rows of ``metrics.jsonl`` (one per finished epoch)."""
    epochs: list[Epoch]
    test_accuracy: float | None
    train_seconds: float | None
    finished: bool
    records: list[AttackRecord]
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    """The run's ``config.json``, as read."""
    seed: int = 0
    """The training seed (split, initialization, shuffling)."""
    defended: list[AttackRecord] = field(default_factory=list)
    """Records of the model wrapped in a passive defense (a different model: never
    merged into this run's worst case; see `advkit.report.defense`)."""
    transfers: list[Any] = field(default_factory=list)
    """The `advkit.transfer.TransferRecord` files in ``transfers/``."""
    summary: dict[str, Any] = field(default_factory=dict)
    """The run's ``summary.json`` (empty when training did not finish)."""

    @property
    def adversarial(self) -> dict[str, Any] | None:
        """The training attack of an adversarially trained run (``config.json``), else None."""
        found = (self.config.get("training") or {}).get("adversarial")
        return (
            found if isinstance(found, dict) and found.get("mode") not in (None, "none") else None
        )

    @property
    def training(self) -> str:
        """``standard``, or the training attack: ``PGD-AT ε=0.1``, ``TRADES L2 ε=0.5``."""
        return training_label(self.adversarial)

    @property
    def collapsed(self) -> dict[str, Any] | None:
        """Catastrophic overfitting that stopped the run (``summary.json``), else None."""
        found = self.summary.get("catastrophic_overfitting")
        return found if isinstance(found, dict) else None

    @property
    def label(self) -> str:
        """``bncnn · adam``, ``bncnn · adam · PGD-AT ε=0.1``."""
        parts = [self.model, self.optimizer]
        return " · ".join(parts + ([self.training] if self.adversarial else []))


_AT_NAMES = {"pgd": "PGD-AT", "fgsm-rs": "FGSM-RS-AT", "trades": "TRADES"}


def training_label(adversarial: dict[str, Any] | None) -> str:
    """``standard`` or ``PGD-AT ε=0.1`` (the norm named when it is not L∞)."""
    if not adversarial:
        return "standard"
    mode = str(adversarial.get("mode"))
    name = _AT_NAMES.get(mode, f"{mode.upper()}-AT")
    norm = adversarial.get("norm", "linf")
    eps = adversarial.get("eps")
    norm_part = "" if norm == "linf" else f" {norm_name(str(norm))}"
    return f"{name}{norm_part} ε={eps:g}" if is_number(eps) else f"{name}{norm_part}"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (it holds a ``config.json``)."""
    return (path / runs.CONFIG).is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by ``paths``, in order, without repeats.

    A path that is not a run itself but whose subdirectories hold runs stands
    for those runs (``advkit report runs/`` is ``advkit report runs/*``).

    Raises:
        RunError: a path that does not exist, or is neither a run directory nor
            a directory holding runs.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise RunError(f"run directory {str(p)!r} does not exist")
        if not p.is_dir():
            raise RunError(f"{str(p)!r} is not a run directory (it is a file)")
        if is_run(p):
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and is_run(c))
        if not children:
            raise RunError(
                f"{str(p)!r} is not a run directory: it has no {runs.CONFIG} "
                "and no subdirectory holding one"
            )
        found.extend(children)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def check_examples(tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """Raise RunError unless ``tensors`` is a gallery file (see ``EXAMPLE_KEYS``)."""
    missing = [k for k in EXAMPLE_KEYS if k not in tensors]
    if missing:
        raise RunError(f"{path} is not a gallery file: it lacks {', '.join(missing)}")
    x, x_adv = tensors["x"], tensors["x_adv"]
    if x.ndim != 4 or x.shape != x_adv.shape or x.shape[1] not in (1, 3):
        raise RunError(
            f"{path} is not a gallery file: x and x_adv must be (n, 1 or 3, H, W), "
            f"got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    n = len(x)
    if any(len(tensors[k]) != n for k in EXAMPLE_KEYS):
        raise RunError(
            f"{path} is not a gallery file: its tensors hold different numbers of samples"
        )


def _curve(c: StoredCurve) -> Curve:
    return Curve(
        epsilons=list(c.epsilons),
        accuracy=list(c.accuracy),
        success_rate=list(c.success_rate),
        clean_accuracy=c.clean_accuracy,
        n_samples=c.n_samples,
        n_excluded=c.n_excluded,
        seconds=c.seconds,
        cost=sum(c.cost.values()) if any(c.passes.values()) else None,
        intervals=[list(i) for i in c.intervals],
        flags=list(c.flags),
        per_sample=dict(c.per_sample),
        checks=[dict(check) for check in c.checks],
    )


def parse_record(
    data: Any, path: Path, examples: dict[str, torch.Tensor] | None = None
) -> AttackRecord:
    """The typed record of the JSON object ``data`` read from ``path``.

    The record is checked once, by `advkit.records.AttackRecord.from_dict`.

    Raises:
        RunError: a record without the documented fields (the message names ``path``).
    """
    stored = StoredRecord.from_dict(data, str(path))
    s = stored.settings
    ex = stored.examples
    return AttackRecord(
        path=path,
        name=str(data.get("name") or path.stem),
        setting=Setting(s.attack, s.norm, s.target, s.options.get("loss") or "ce", s.split),
        curve=_curve(stored.curve),
        steps=s.options.get("steps"),
        restarts=s.options.get("restarts"),
        examples=examples,
        examples_eps=ex["eps"] if is_number(ex.get("eps")) else None,
        examples_file=str(ex["file"]) if ex.get("file") else None,
        model=stored.model,
        optimizer=stored.optimizer,
        dataset=stored.dataset,
        stored=stored,
    )


def record_from_dict(
    data: dict[str, Any], examples: dict[str, torch.Tensor] | None
) -> AttackRecord:
    """A record held in memory (``advkit attack`` before writing it), checked."""
    name = Path(str(data.get("name", "record")) if isinstance(data, dict) else "record")
    if examples is not None:
        check_examples(examples, name)
    return parse_record(data, name, examples)


def _read_record(file: Path, notes: list[str]) -> AttackRecord:
    """One ``attacks/*.json`` with its examples; a missing examples file becomes a note."""
    record = parse_record(runs.read_json(file), file)
    if record.examples_file is None:
        return record
    ex_path = file.parent / record.examples_file
    if ex_path.exists():
        record.examples = runs.read_safetensors(ex_path)
        check_examples(record.examples, ex_path)
    else:
        notes.append(f"{file.name}: its examples file {record.examples_file} is missing")
    return record


def _read_config(path: Path) -> dict[str, Any]:
    config = runs.read_json(path / runs.CONFIG)
    if not (
        isinstance(config, dict)
        and isinstance(config.get("model"), dict)
        and isinstance(config.get("optimizer"), dict)
        and "name" in config["model"]
        and "name" in config["optimizer"]
    ):
        raise RunError(
            f"{path / runs.CONFIG} does not hold a run config (model and optimizer names)"
        )
    return config


def _epochs(metrics: list[dict[str, Any]]) -> list[Epoch]:
    return [
        Epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch" and is_number(v)})
        for row in metrics
        if isinstance(row, dict) and "epoch" in row
    ]


def load_report_run(path: str | Path) -> ReportRun:
    """Read what the report needs from a run directory.

    Missing pieces (no ``summary.json``, no attacks, no examples file) become
    notes; corrupt ones are errors.

    Raises:
        RunError: no ``config.json``, or a corrupt config, metrics, attack
            record or examples file (the message names the file).
    """
    path = Path(path)
    if not is_run(path):
        raise RunError(f"{str(path)!r} is not a run directory: it has no {runs.CONFIG}")
    config = _read_config(path)
    metrics = runs.read_jsonl(path / runs.METRICS)
    summary, notes = None, []
    if (path / runs.SUMMARY).exists():
        summary = runs.read_json(path / runs.SUMMARY)
        if not isinstance(summary, dict):
            raise RunError(f"{path / runs.SUMMARY} does not hold a training summary")
    else:
        notes.append(
            f"training did not finish ({len(metrics)} epochs in metrics.jsonl, no summary.json)"
        )
    read = [_read_record(file, notes) for file in sorted((path / "attacks").glob("*.json"))]
    records = [r for r in read if not defended(r)]
    if not read:
        notes.append(f"no attacks yet (run: advkit attack {path} --attack pgd --norm linf)")
    schedule = config.get("schedule") or {}
    return ReportRun(
        path=path,
        name=path.name,
        model=str(config["model"]["name"]),
        optimizer=str(config["optimizer"]["name"]),
        dataset=str(config.get("dataset", {}).get("name", "?")),
        lr=config["optimizer"].get("lr"),
        schedule=schedule.get("name") or None,
        warmup_epochs=schedule.get("warmup_epochs") or 0,
        metric_rows=len(metrics),
        epochs=_epochs(metrics),
        test_accuracy=(summary or {}).get("test_accuracy"),
        train_seconds=(summary or {}).get("seconds"),
        finished=summary is not None,
        records=records,
        notes=notes,
        config=config,
        seed=_seed(config),
        defended=[r for r in read if defended(r)],
        transfers=_read_transfers(path),
        summary=summary or {},
    )


def defended(record: AttackRecord) -> bool:
    """Whether the record attacked the model wrapped in a passive defense."""
    return record.stored is not None and record.stored.settings.defense is not None


def _read_transfers(path: Path) -> list[Any]:
    from ..transfer import TRANSFER_DIR, read_record

    try:
        return [read_record(f) for f in sorted((path / TRANSFER_DIR).glob("transfer-*.json"))]
    except ValueError as e:
        raise RunError(str(e)) from None


def _seed(config: dict[str, Any]) -> int:
    for section in ("train_config", "training"):
        value = (config.get(section) or {}).get("seed")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0
