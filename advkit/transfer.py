"""Transfer attacks: craft adversarial images on source models, measure victims on them.

The course's black-box homework: the student attacks surrogate models they
have (one, or several as an `attacks.Ensemble`), submits the adversarial
images as 8-bit PNG files, and is judged by the accuracy of models they never
see. `transfer` measures that: for each budget and each source it crafts the
images once, rounds them to 8-bit levels within the budget (`advkit.images`),
and counts each victim's correct answers on exactly those images, giving a
source x victim matrix of accuracy per budget, with 95% Wilson intervals.
With `save_images`, the images are written as PNG files and the victims are
measured on the files read back. `transfer_runs` does the same for run
directories, and `evaluate_images` measures victims on PNG files made elsewhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import attacks

from . import __version__, images, runs
from .data import Dataset, load_dataset
from .evaluate import attack_options, takes
from .records import SPLITS
from .trust import wilson

TRANSFER_DIR = "transfers"

# The attack's options that `transfer` sets itself.
_SET_HERE = ("norm", "target", "clip", "generator", "early_stop")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TransferSettings:
    """Everything that decides a transfer matrix's numbers, checked once when made.

    Attributes:
        attack: A name in `attacks.ATTACKS`, or None for images read from files.
        epsilons: L-inf budgets in pixel units, increasing.
        options: The attack's own options, every default filled in, JSON-ready.
        split: `"test"` or `"val"`; `limit`: only its first this many samples.
        batch_size: Samples per attack call and per victim forward pass.
        seed: Seeds the attack's random draws (input diversity).
    """

    attack: str | None
    epsilons: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    limit: int | None = None
    batch_size: int = 256
    seed: int = 0

    @classmethod
    def make(
        cls,
        *,
        attack: str | None = "mifgsm",
        epsilons: Sequence[float],
        split: str = "test",
        limit: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        **options: Any,
    ) -> TransferSettings:
        """Check the settings and fill in the attack's defaults.

        Raises:
            ValueError: Naming the bad setting (an unknown attack or option, a
                budget that is not finite and >= 0, a bad split or limit).
        """
        defaults = {} if attack is None else attack_options(attack)
        for name in _SET_HERE:
            defaults.pop(name, None)
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(f"{attack or 'images'} does not take the option(s) {unknown}")
        eps = tuple(float(e) for e in epsilons)
        if not eps or any(not (math.isfinite(e) and e >= 0) for e in eps):
            raise ValueError(f"epsilons must be finite numbers >= 0, got {list(epsilons)!r}")
        if any(b <= a for a, b in zip(eps, eps[1:], strict=False)):
            raise ValueError(f"epsilons must be strictly increasing, got {list(eps)}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        filled = {k: _json_ready(v) for k, v in {**defaults, **options}.items()}
        return cls(attack, eps, filled, split, limit, batch_size, seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"epsilons": list(self.epsilons)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferSettings:
        return cls(**{**d, "epsilons": tuple(float(e) for e in d["epsilons"])})


@dataclass
class TransferRecord:
    """A source x victim matrix of victim accuracy per budget.

    Counts are indexed `[eps][source][victim]`; accuracies and intervals derive
    from them and `n_samples`.

    Attributes:
        settings: What was run.
        sources: Row labels (a run's name, `a + b` for an ensemble, or the image folder).
        victims: Column labels.
        dataset: The dataset's name; `n_samples`: images per cell.
        clean_correct: Each victim's correct answers on the clean images.
        correct: On the 8-bit images (read back from the PNG files when saved).
        correct_float: On the attack's float images before rounding (None for
            images read from files).
        source_correct: `[eps][source]`, each source on its own 8-bit images
            (None for images read from files): how well the white-box attack worked.
        max_linf: `[eps][source]`, the largest L-inf distance of the 8-bit images.
        runs: A run's label -> the hash of its config (`runs.config_hash`).
        images: Where the PNG files are, if any.
    """

    settings: TransferSettings
    sources: list[str]
    victims: list[str]
    dataset: str
    n_samples: int
    clean_correct: list[int]
    correct: list[list[list[int]]]
    correct_float: list[list[list[int]]] | None
    source_correct: list[list[int]] | None
    max_linf: list[list[float]]
    runs: dict[str, str] = field(default_factory=dict)
    images: str | None = None
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    versions: dict[str, str] = field(
        default_factory=lambda: {"advkit": __version__, "torch": torch.__version__}
    )
    threads: int = field(default_factory=torch.get_num_threads)

    @property
    def clean_accuracy(self) -> list[float]:
        return [c / self.n_samples for c in self.clean_correct]

    @property
    def accuracy(self) -> list[list[list[float]]]:
        """Victim accuracy on the 8-bit images, `[eps][source][victim]`."""
        return [[[c / self.n_samples for c in row] for row in grid] for grid in self.correct]

    @property
    def intervals(self) -> list[list[list[tuple[float, float]]]]:
        """95% Wilson interval of each accuracy."""
        n = self.n_samples
        return [[[wilson(c, n) for c in row] for row in grid] for grid in self.correct]

    @property
    def key(self) -> str:
        """A short hash of what decides the numbers: settings, rows, columns and runs."""
        what = [self.settings.to_dict(), self.sources, self.victims, self.runs, self.dataset]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """The file stem, e.g. `transfer-mifgsm-1a2b3c4d` (`transfer-images-...` from files)."""
        return f"transfer-{self.settings.attack or 'images'}-{self.key}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["settings"] = self.settings.to_dict()
        d.update(
            name=self.name,
            clean_accuracy=self.clean_accuracy,
            accuracy=self.accuracy,
            intervals=[[[list(i) for i in row] for row in grid] for grid in self.intervals],
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferRecord:
        """A record written by `to_dict` (derived fields are recomputed, not read)."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        fields["settings"] = TransferSettings.from_dict(d["settings"])
        return cls(**fields)


def count_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, device: Any
) -> int:
    """How many of `x` the model classifies as `y` (eval mode, no gradients)."""
    correct = 0
    with torch.no_grad(), attacks.eval_mode(model):
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size].to(device)
            logits = attacks.logits_of(model(xb))
            correct += int((logits.argmax(dim=1).cpu() == y[start : start + batch_size]).sum())
    return correct


def craft(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    settings: TransferSettings,
    *,
    device: Any = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Untargeted L-inf adversarial images of `x` on `source`, in batches, on the CPU.

    Batch `b` draws its random numbers from a generator seeded with `seed + b`.
    """
    assert settings.attack is not None, "images read from files are not crafted"
    attack = attacks.ATTACKS[settings.attack]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.options.items()}
    out = []
    for b, start in enumerate(range(0, len(y), settings.batch_size)):
        if takes(settings.attack, "generator"):
            generator = torch.Generator(device=device).manual_seed((seed + b) % 2**64)
            options["generator"] = generator
        xb = x[start : start + settings.batch_size].to(device)
        yb = y[start : start + settings.batch_size].to(device)
        out.append(attack(source, xb, yb, eps, norm="linf", **options).cpu())
    return torch.cat(out) if out else x.clone()


def _eps_seeds(seed: int, n: int) -> list[int]:
    """One seed per budget, drawn from `seed` (each budget's attack is independent)."""
    rng = torch.Generator().manual_seed(seed % 2**64)
    return torch.randint(0, 2**62, (n,), generator=rng).tolist()


def transfer(
    sources: Mapping[str, nn.Module],
    victims: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TransferSettings,
    *,
    device: Any = "cpu",
    save_images: str | os.PathLike | None = None,
    indices: torch.Tensor | None = None,
    class_names: tuple[str, ...] | None = None,
    dataset: str = "",
    progress: Progress | None = None,
) -> TransferRecord:
    """Craft on each source at each budget and count each victim's correct answers.

    Args:
        sources: Label -> model to craft on (an `attacks.Ensemble` for several).
        victims: Label -> model to measure.
        x, y: Clean images in [0, 1] `(N, C, H, W)` and their labels.
        settings: The attack and budgets (`settings.attack` must not be None).
        device: Where the models run.
        save_images: Write the 8-bit images here as PNG files (one source and
            one budget only) and measure the victims on the files read back.
        indices: Each sample's index in its split, naming its file (default 0..N-1).
        class_names: Class folder names (default `"0"`, `"1"`, ...).
        dataset: The dataset's name, for the record.
        progress: `progress(done, total)` after each (budget, source) cell row.

    Returns:
        The record (without run hashes: see `transfer_runs`).

    Raises:
        ValueError: For bad arguments, or 8-bit images that cannot keep the budget.
    """
    if settings.attack is None:
        raise ValueError("settings.attack must name an attack (see evaluate_images for files)")
    if not sources or not victims:
        raise ValueError("give at least one source and one victim")
    if save_images is not None and (len(sources) > 1 or len(settings.epsilons) > 1):
        raise ValueError("save_images needs exactly one source and one budget")
    indices = torch.arange(len(y)) if indices is None else indices
    k = int(y.max()) + 1 if len(y) else 1
    names = class_names or tuple(str(c) for c in range(k))
    measure = _counter(settings, device)
    seeds = _eps_seeds(settings.seed, len(settings.epsilons))
    grids: dict[str, list] = {"correct": [], "float": [], "source": [], "linf": []}
    for i, eps in enumerate(settings.epsilons):
        rows: dict[str, list] = {key: [] for key in grids}
        for source in sources.values():
            x_adv = craft(source, x, y, eps, settings, device=device, seed=seeds[i])
            levels = images.to_levels(x_adv, x, eps)
            if save_images is not None:
                levels = _round_trip(save_images, levels, y, indices, names)
            rounded = images.from_levels(levels)
            rows["linf"].append(images.check_budget(rounded, x, eps))
            rows["correct"].append([measure(v, rounded, y) for v in victims.values()])
            rows["float"].append([measure(v, x_adv, y) for v in victims.values()])
            rows["source"].append(measure(source, rounded, y))
            if progress is not None:
                progress(i * len(sources) + len(rows["linf"]), len(seeds) * len(sources))
        for key in grids:
            grids[key].append(rows[key])
    return TransferRecord(
        settings=settings, sources=list(sources), victims=list(victims), dataset=dataset,
        n_samples=len(y), clean_correct=[measure(v, x, y) for v in victims.values()],
        correct=grids["correct"], correct_float=grids["float"], source_correct=grids["source"],
        max_linf=grids["linf"], images=None if save_images is None else str(save_images),
    )  # fmt: skip


def _round_trip(
    directory: str | os.PathLike,
    levels: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    names: tuple[str, ...],
) -> torch.Tensor:
    """Write the images as PNG files and read them back: what a victim will see."""
    images.write_images(directory, levels, y, indices, names)
    back, labels, read_indices = images.read_images(directory, names)
    order = torch.argsort(indices)
    wanted = (levels[order], y[order], indices[order])
    if back.shape != levels.shape or not all(
        torch.equal(a, b) for a, b in zip((back, labels, read_indices), wanted, strict=True)
    ):
        raise ValueError(
            f"the PNG files in {directory} are not the images just written (was the "
            "directory used before? give an empty one)"
        )
    return back[torch.argsort(order)]


def _counter(settings: TransferSettings, device: Any) -> Callable[..., int]:
    """`count_correct` with the settings' batch size and the device."""

    def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
        return count_correct(model, x, y, batch_size=settings.batch_size, device=device)

    return measure


# --- run directories ---------------------------------------------------------


def _labels(paths: Sequence[Path]) -> dict[Path, str]:
    """Each run's label: its directory's name, or its whole path where names repeat."""
    names = [p.name for p in paths]
    return {p: p.name if names.count(p.name) == 1 else str(p) for p in paths}


def _load_runs(paths: Sequence[Path], device: Any) -> dict[Path, tuple[nn.Module, dict]]:
    """Each run once, and a check that all take the same images and classes.

    Raises:
        ValueError: For a missing or corrupt run, or runs of different datasets,
            input shapes or class counts, naming them.
    """
    loaded = {p: runs.load_run(p, device=device) for p in dict.fromkeys(paths)}
    first = paths[0]

    def what(config: dict) -> tuple[str, list[int], int]:
        return (
            config["dataset"]["name"],
            list(config["model"]["input_shape"]),
            config["model"]["num_classes"],
        )

    want = what(loaded[first][1])
    for path, (_, config) in loaded.items():
        got = what(config)
        if got != want:
            raise ValueError(
                f"run {path} takes {got[0]} images of shape {got[1]} with {got[2]} classes, "
                f"but {first} takes {want[0]} images of shape {want[1]} with {want[2]} "
                "classes: every source and victim must take the same images"
            )
    return loaded


def _samples(
    config: dict, settings: TransferSettings, data: Dataset | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The settings' split of the run's dataset (all of it: `limit` is applied by callers)."""
    if data is None:
        ds = config["dataset"]
        data = load_dataset(ds["name"], data_dir=ds.get("data_dir"), seed=ds["seed"])
    if list(data.input_shape) != list(config["model"]["input_shape"]):
        raise ValueError(
            f"dataset {data.name!r} now has images {list(data.input_shape)}, but the runs "
            f"take {config['model']['input_shape']}"
        )
    return data.split(settings.split)


def transfer_runs(
    sources: Sequence[Sequence[str | os.PathLike]],
    victims: Sequence[str | os.PathLike],
    settings: TransferSettings,
    *,
    device: Any = "cpu",
    save_images: str | os.PathLike | None = None,
    data: Dataset | None = None,
    progress: Progress | None = None,
) -> TransferRecord:
    """`transfer` between run directories written by `advkit train`.

    Args:
        sources: One entry per row of the matrix: a list of run directories,
            one run or several crafted on as an `attacks.Ensemble`.
        victims: The run directories to measure.
        settings: Attack, budgets, split, limit, batch size, seed.
        device: Where the models run.
        save_images: See `transfer`.
        data: The runs' dataset, already loaded (saves reloading it).
        progress: See `transfer`.

    Raises:
        ValueError: For a missing or corrupt run, runs that take different
            images, or bad settings.
    """
    groups = [[Path(p) for p in group] for group in sources]
    if not groups or not all(groups) or not victims:
        raise ValueError("give at least one source run and one victim run")
    paths = [p for group in groups for p in group] + [Path(p) for p in victims]
    loaded = _load_runs(paths, device)
    labels = _labels(list(loaded))
    config = loaded[paths[0]][1]
    x, y = _samples(config, settings, data)
    x, y = x[: settings.limit], y[: settings.limit]
    if len(y) == 0:
        raise ValueError(f"the {settings.split} split is empty: nothing to attack")
    source_models: dict[str, nn.Module] = {}
    for group in groups:
        members = [loaded[p][0] for p in group]
        label = " + ".join(labels[p] for p in group)
        source_models[label] = members[0] if len(members) == 1 else attacks.Ensemble(members)
    victim_models = {labels[Path(p)]: loaded[Path(p)][0] for p in victims}
    dataset = config["dataset"]["name"]
    record = transfer(
        source_models, victim_models, x, y, settings, device=device, save_images=save_images,
        class_names=images.class_names(dataset, config["model"]["num_classes"]),
        dataset=dataset, progress=progress,
    )  # fmt: skip
    record.runs = {labels[p]: runs.config_hash(c) for p, (_, c) in loaded.items()}
    return record


def evaluate_images(
    directory: str | os.PathLike,
    victims: Sequence[str | os.PathLike],
    settings: TransferSettings,
    *,
    device: Any = "cpu",
    data: Dataset | None = None,
) -> TransferRecord:
    """Measure victim runs on PNG files in the layout of `images.write_images`.

    Each file's index names its clean sample in `settings.split` of the
    victims' dataset; its folder must be that sample's class, and the image
    must lie within `settings.epsilons[0]` (L-inf) of it.

    Raises:
        ValueError: For files that do not fit the layout or the split, images
            over the budget, more than one budget, or bad runs.
    """
    if len(settings.epsilons) != 1:
        raise ValueError(f"give one budget to check the images against, got {settings.epsilons}")
    paths = [Path(p) for p in victims]
    if not paths:
        raise ValueError("give at least one victim run")
    loaded = _load_runs(paths, device)
    labels = _labels(list(loaded))
    config = loaded[paths[0]][1]
    dataset = config["dataset"]["name"]
    x_split, y_split = _samples(config, settings, data)
    names = images.class_names(dataset, config["model"]["num_classes"])
    levels, y, indices = images.read_images(directory, names)
    x, label_of = _clean_counterparts(directory, x_split, y_split, levels, indices)
    wrong = (label_of != y).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        raise ValueError(
            f"{images.image_path(directory, names[int(y[i])], int(indices[i]))} is in the "
            f"folder of class {names[int(y[i])]}, but sample {int(indices[i])} of the "
            f"{settings.split} split is a {names[int(label_of[i])]}"
        )
    rounded, eps = images.from_levels(levels), settings.epsilons[0]
    measure = _counter(settings, device)
    victim_models = {labels[p]: loaded[p][0] for p in paths}
    return TransferRecord(
        settings=settings, sources=[str(directory)], victims=list(victim_models),
        dataset=dataset, n_samples=len(y),
        clean_correct=[measure(v, x, y) for v in victim_models.values()],
        correct=[[[measure(v, rounded, y) for v in victim_models.values()]]],
        correct_float=None, source_correct=None,
        max_linf=[[images.check_budget(rounded, x, eps)]],
        runs={labels[p]: runs.config_hash(c) for p, (_, c) in loaded.items()},
        images=str(directory),
    )  # fmt: skip


def _clean_counterparts(
    directory: str | os.PathLike,
    x_split: torch.Tensor,
    y_split: torch.Tensor,
    levels: torch.Tensor,
    indices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean images and labels the files' indices name; ValueError if they cannot."""
    if int(indices.max()) >= len(y_split):
        raise ValueError(
            f"{directory} holds index {int(indices.max())}, but the split has only "
            f"{len(y_split)} samples"
        )
    x = x_split[indices]
    if levels.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"the images in {directory} have shape {tuple(levels.shape[1:])}, but the "
            f"victims take {tuple(x.shape[1:])}"
        )
    return x, y_split[indices]


# --- files -------------------------------------------------------------------


def default_path(record: TransferRecord, run_dir: str | os.PathLike) -> Path:
    """Where a record goes by default: `RUN/transfers/NAME.json`."""
    return Path(run_dir) / TRANSFER_DIR / f"{record.name}.json"


def write_record(record: TransferRecord, path: str | os.PathLike, *, figure: bool = True) -> Path:
    """Write the record's JSON at `path` and its heatmap beside it (`.png`), atomically.

    Returns:
        The figure's path (or `path` when `figure` is False).
    """
    path = Path(path)
    drawn = path
    if figure:
        from .report import save_figure  # matplotlib only when drawing
        from .transfer_figure import transfer_figure

        drawn = save_figure(transfer_figure(record), path.with_suffix(".png"))
    runs.write_json(path, record.to_dict())  # last: once it exists, so does its figure
    return drawn


def read_record(path: str | os.PathLike) -> TransferRecord:
    """Read a record written by `write_record`.

    Raises:
        ValueError: For a missing file or one that is not a transfer record.
    """
    data = runs.read_json(path)
    try:
        return TransferRecord.from_dict(data)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a transfer record ({e})") from None


def _json_ready(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value
