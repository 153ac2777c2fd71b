"""Robustness curves over several processes (``torch.distributed``), resumable.

`distributed_curve` evaluates the same curve as `robustness_curve`, sample for
sample, with the samples shared out across the ranks of a process group
(``torchrun --nproc-per-node N -m advkit attack ...``; gloo on CPU, nccl on
GPU). Without a process group it runs in this process alone, the same way.

How the work is split: the evaluated samples (in dataset order, less those a
class target excludes) are cut into consecutive chunks; in round ``k`` rank
``r`` attacks chunk ``k * W + r`` with `robustness_curve`, passing each row's
index in the dataset (``sample_ids``) so that every random choice is that of
the single-process run. After each round one ``all_gather_object`` brings every
rank the round's per-sample results, and rank 0 writes them to a progress file
(JSON, atomically): an interrupted evaluation continues where the last round
ended, on any number of processes. The curve (accuracy, success rate,
intervals) follows from the per-sample breaking budgets exactly, so every rank
builds the same `Curve`, with ``"world_size"`` in its settings.

Every rank first compares what it was given (samples, labels, settings); ranks
that disagree raise a ValueError naming the difference instead of computing
different curves, and an error on one rank is raised on every rank at the
end of its round, so no rank waits for a peer that has given up. Collectives
time out after the process group's ``timeout`` (`init_from_env`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import runs
from .evaluate import Curve, attack_options, robustness_curve
from .trust import curve_flags, model_flags, wilson

# Seconds a collective waits for the slowest rank before failing; one round of
# work (a chunk of samples at every eps) must fit in it. ADVKIT_DIST_TIMEOUT overrides.
DEFAULT_TIMEOUT = 3600.0

# Samples per chunk, in attack batches: progress is saved after each round of chunks.
CHUNK_BATCHES = 8

PROGRESS_VERSION = 1


def world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or no process group)."""
    return world()[0] == 0


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 when not under it)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def init_from_env(device: torch.device, *, timeout: float | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Does nothing without ``WORLD_SIZE`` in the environment or when a group
    exists. Uses nccl for CUDA (each rank on ``cuda:LOCAL_RANK``), gloo
    otherwise; `timeout` (seconds; default ADVKIT_DIST_TIMEOUT or 3600) bounds
    every collective.

    Returns:
        The device this rank should use.
    """
    if "WORLD_SIZE" not in os.environ or not dist.is_available() or dist.is_initialized():
        return device
    if timeout is None:
        timeout = float(os.environ.get("ADVKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout))
    return device


def finish() -> None:
    """Leave the process group, if this process joined one, together with the others.

    A rank that tears its group down while another still talks to it can abort
    in gloo's threads ("terminate called without an active exception"): wait
    for every rank first.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer is gone already: leave anyway
            pass
        dist.destroy_process_group()


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (``[obj]`` without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(what: str, value: Any) -> None:
    """Raise ValueError on every rank unless all ranks hold the same `value`."""
    values = gather(value)
    if any(v != values[0] for v in values):
        shown = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise ValueError(f"the processes disagree about {what} ({shown})")


def fingerprint(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What identifies the data: N, shapes, dtypes, sha256 of the labels, a checksum of x."""
    labels = y.detach().cpu().contiguous().numpy().tobytes()
    return {
        "n": len(y),
        "x": [str(x.dtype), list(x.shape)],
        "y_sha256": hashlib.sha256(labels).hexdigest()[:16],
        "x_sum": float(x.detach().double().sum()),
    }


_TAKES_SAMPLE_IDS = "sample_ids" in inspect.signature(robustness_curve).parameters


def per_sample_seeds() -> bool:
    """Whether `robustness_curve` draws randomness per dataset index (``sample_ids``).

    Until it does, random attacks (random starts, random targets) give results
    that depend on how the samples are chunked; deterministic ones do not.
    """
    return _TAKES_SAMPLE_IDS


def distributed_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float] = (0, 0.05, 0.1),
    attack: str = "pgd",
    norm: str = "linf",
    target: None | str | int = None,
    batch_size: int = 256,
    seed: int = 0,
    *,
    incremental: bool = True,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    examples: int = 0,
    resume: str | os.PathLike | None = None,
    chunk_size: int | None = None,
    **attack_kw: Any,
) -> Curve:
    """`robustness_curve` shared out across the ranks of the process group, resumable.

    Every rank calls it with the same arguments and gets the same `Curve`: the
    single-process curve, sample for sample (`per_sample`, accuracy, success
    rate, intervals, clean accuracy, per-eps checks of the perturbations), with
    ``settings["world_size"]``; `passes`, `seconds` and the per-eps pass counts
    are the work actually done (summed over ranks and over resumed runs).

    Args:
        model, x, y, epsilons, attack, norm, target, batch_size, seed,
        incremental, device, examples, attack_kw: as for `robustness_curve`.
        progress: Called on every rank as ``progress(done, total)`` (samples)
            after each round.
        resume: A progress file (JSON; the gallery examples go beside it as
            ``.examples.safetensors``). Rank 0 rewrites it after each round;
            results found there for the same data and settings are reused.
            Removed when the curve is complete. None: no progress is kept.
        chunk_size: Samples per chunk (default: 8 attack batches, fewer when
            that leaves a rank without work).

    Raises:
        ValueError: For a bad argument, ranks that disagree about the data or
            settings, or an error on any rank (on every rank alike).
    """
    started = time.perf_counter()
    rank, size = world()
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError("x and y must be tensors, y of shape (N,) (see robustness_curve)")
    call = dict(
        epsilons=[float(e) for e in epsilons], attack=attack, norm=norm, target=target,
        batch_size=batch_size, seed=seed, incremental=incremental,
        **{k: _jsonable(v) for k, v in attack_kw.items()},
    )  # fmt: skip
    key = {"data": fingerprint(x, y), "call": call, "version": PROGRESS_VERSION}
    agree("the data and settings", key)
    keep = _evaluated(y, target)
    state = _Progress.load(resume, key) if rank == 0 else None
    state = broadcast(state) or _Progress(key)
    options = dict(
        epsilons=epsilons, attack=attack, norm=norm, target=target, batch_size=batch_size,
        seed=seed, incremental=incremental, device=device, **attack_kw,
    )  # fmt: skip
    todo = [p for p in keep if p not in state.done]
    chunk = chunk_size or CHUNK_BATCHES * batch_size
    chunk = max(1, min(chunk, math.ceil(len(todo) / size))) if todo else 1
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    first = set(keep[: max(examples, 0)])
    for start in range(0, len(chunks), size):
        mine = chunks[start + rank] if start + rank < len(chunks) else []
        inside = _within_chunk(progress, len(state.done), len(mine) * size, len(keep), epsilons)
        results = gather(_attack_chunk(model, x, y, mine, first, {**options, "progress": inside}))
        _raise_failures(results)
        for result in results:
            state.add(result)
        if rank == 0 and resume is not None:
            state.save(resume)
        if progress is not None:
            progress(len(state.done), len(keep))
    curve = _curve(model, x, y, keep, state, options, examples)
    curve.seconds = time.perf_counter() - started
    if rank == 0 and resume is not None:
        _Progress.remove(resume)
    return curve


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _evaluated(y: torch.Tensor, target: None | str | int) -> list[int]:
    """Positions of the samples the curve evaluates: all, less those a class target excludes."""
    labels = y.detach().cpu()
    # Other values (negative, too large) are refused by robustness_curve itself.
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < 2**63:
        keep = (labels != target).nonzero().squeeze(1).tolist()
        if not keep:
            raise ValueError(f"target={target!r} leaves no sample: every true label is that class")
        return keep
    return list(range(len(labels)))


_WARNINGS = {"RuntimeWarning": RuntimeWarning, "UserWarning": UserWarning}


def _within_chunk(
    progress: Callable[[int, int], None] | None,
    done: int,
    share: int,
    total: int,
    epsilons: Sequence[float],
) -> Callable[[int, int, int], None] | None:
    """A `robustness_curve` progress callback that moves the samples-done count during a round.

    A curve works through the grid in passes (one per eps, or per round of the
    descend method, never more than the grid's length); a pass ends when its
    `done` reaches its `total`. The round's share of the samples is credited in
    proportion, so a long single-chunk evaluation shows its progress.
    """
    if progress is None:
        return None
    passes = max(1, len(epsilons))
    ended = [0]

    def report(eps_index: int, batch_done: int, batch_total: int) -> None:
        fraction = (ended[0] + (batch_done / batch_total if batch_total else 1.0)) / passes
        if batch_done >= batch_total:
            ended[0] = min(passes - 1, ended[0] + 1)
        # Short of the round's end: only a finished (and saved) round reports it.
        progress(min(total, done + min(share - 1, int(fraction * share))), total)

    return report


def _attack_chunk(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    positions: list[int],
    first: set[int],
    options: dict[str, Any],
) -> dict[str, Any]:
    """One chunk's curve as plain per-sample results, or the error it raised."""
    if not positions:
        return {"index": []}
    try:
        index = torch.tensor(positions)
        kw: dict[str, Any] = {"sample_ids": index} if _TAKES_SAMPLE_IDS else {}
        kept = sum(1 for p in positions if p in first)  # the chunk's leading samples
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            curve = robustness_curve(
                model, x[index.to(x.device)], y[index.to(y.device)],
                examples=kept, **options, **kw,
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 (every rank raises it, see _raise_failures)
        return {"index": [], "error": e, "message": f"{type(e).__name__}: {e}"}
    ps, n = curve.per_sample, curve.n_samples
    assert n == len(positions), (n, len(positions))
    examples = None
    if curve.examples is not None:
        examples = {k: curve.examples[k].cpu() for k in ("x", "y", "target", "x_adv")}
    return {
        "index": positions,
        "fooled_at": ps["fooled_at"],
        "reached_at": ps["reached_at"],
        "target": ps.get("target"),
        "clean_correct": round(curve.clean_accuracy * n),
        "correct": [round(a * n) for a in curve.accuracy],
        "reached": [round(s * n) for s in curve.success_rate],
        "checks": curve.checks,
        "passes": curve.passes,
        "settings": curve.settings,
        "warnings": sorted({(type(w.message).__name__, str(w.message)) for w in caught}),
        "examples": examples,
    }


def _raise_failures(results: list[dict[str, Any]]) -> None:
    """Raise on every rank if any rank failed: its own error, or a ValueError naming the rank."""
    rank = world()[0]
    own = results[rank].get("error") if rank < len(results) else None
    if isinstance(own, BaseException):
        raise own
    for r, result in enumerate(results):
        if "message" in result:
            raise ValueError(f"process {r} failed: {result['message']}")


def _merge_check(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two chunks' checks at one eps as one (sums, extremes, stages merged in order)."""

    def extreme(name: str, pick: Callable[..., Any]) -> Any:
        values = [v for v in (a.get(name), b.get(name)) if v is not None]
        return pick(values) if values else None

    merged = dict(a)
    for name in ("attacked", "nan_count", "forward", "backward"):
        merged[name] = a.get(name, 0) + b.get(name, 0)
    merged["max_norm"] = extreme("max_norm", max)
    merged["min"], merged["max"] = extreme("min", min), extreme("max", max)
    if "stages" in a or "stages" in b:
        stages: dict[str, dict[str, Any]] = {}
        for entry in [*a.get("stages", []), *b.get("stages", [])]:
            into = stages.setdefault(entry["stage"], {"stage": entry["stage"]})
            for k, v in entry.items():
                if k != "stage":
                    into[k] = into.get(k, 0) + v
        merged["stages"] = list(stages.values())
    return merged


class _Progress:
    """The per-sample results so far, and the sums the curve needs; saved as JSON."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key
        self.done: dict[int, list] = {}  # position -> [fooled_at, reached_at, target]
        self.clean_correct = 0
        self.correct: list[int] | None = None
        self.reached: list[int] | None = None
        self.checks: list[dict[str, Any]] | None = None
        self.passes = {"forward": 0, "backward": 0}
        self.settings: dict[str, Any] | None = None
        self.warnings: set[tuple[str, str]] = set()
        self.examples: dict[int, dict[str, torch.Tensor]] = {}

    def add(self, result: dict[str, Any]) -> None:
        """Fold one chunk's result in."""
        if not result["index"]:
            return
        targets = result["target"] or [None] * len(result["index"])
        rows = zip(result["index"], result["fooled_at"], result["reached_at"], targets, strict=True)
        for p, f, r, t in rows:
            self.done[p] = [f, r, t]
        self.clean_correct += result["clean_correct"]
        self.correct = _add(self.correct, result["correct"])
        self.reached = _add(self.reached, result["reached"])
        checks = result["checks"]
        self.checks = (
            checks if self.checks is None else list(map(_merge_check, self.checks, checks))
        )
        for kind in self.passes:
            self.passes[kind] += result["passes"][kind]
        self.settings = self.settings or result["settings"]
        self.warnings.update(tuple(w) for w in result["warnings"])
        if result["examples"] is not None:
            for i, p in enumerate(result["index"][: len(result["examples"]["x"])]):
                self.examples[p] = {k: v[i] for k, v in result["examples"].items()}

    def to_dict(self) -> dict[str, Any]:
        fields = ("key", "clean_correct", "correct", "reached", "checks", "passes", "settings")
        d = {name: getattr(self, name) for name in fields}
        d["samples"] = [[p, *row] for p, row in sorted(self.done.items())]
        d["warnings"] = sorted(self.warnings)
        return d

    def save(self, path: str | os.PathLike) -> None:
        """The examples first, then the JSON that says which samples are done."""
        if self.examples:
            positions = sorted(self.examples)
            tensors = {
                k: torch.stack([self.examples[p][k] for p in positions]).contiguous()
                for k in ("x", "y", "target", "x_adv")
            }
            tensors["position"] = torch.tensor(positions)
            with runs.atomic_path(_examples_path(path)) as tmp:
                save_file(tensors, str(tmp))
        runs.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike | None, key: dict[str, Any]) -> _Progress:
        """The progress saved at `path` for this `key`; a fresh one if none, stale or unreadable."""
        state = cls(key)
        if path is None or not Path(path).exists():
            return state
        try:
            d = runs.read_json(path)
            if not isinstance(d, dict) or d.get("key") != json.loads(json.dumps(key)):
                return state
            for p, *row in d["samples"]:
                state.done[int(p)] = list(row)
            for name in ("clean_correct", "correct", "reached", "checks", "passes", "settings"):
                setattr(state, name, d[name])
            state.warnings = {tuple(w) for w in d["warnings"]}  # type: ignore[misc]
            if Path(_examples_path(path)).exists():
                tensors = load_file(str(_examples_path(path)))
                for i, p in enumerate(tensors.pop("position").tolist()):
                    state.examples[p] = {k: v[i] for k, v in tensors.items()}
        except (runs.RunError, KeyError, TypeError, ValueError, SafetensorError):
            warnings.warn(f"ignoring unreadable progress file {path}", UserWarning, stacklevel=2)
            return cls(key)
        return state

    @staticmethod
    def remove(path: str | os.PathLike) -> None:
        Path(path).unlink(missing_ok=True)
        Path(_examples_path(path)).unlink(missing_ok=True)


def _examples_path(path: str | os.PathLike) -> str:
    return str(Path(path).with_suffix("")) + ".examples.safetensors"


def _add(total: list[int] | None, part: list[int]) -> list[int]:
    return list(part) if total is None else [a + b for a, b in zip(total, part, strict=True)]


def _curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    keep: list[int],
    state: _Progress,
    options: dict[str, Any],
    examples: int,
) -> Curve:
    """The whole curve from the per-sample results and sums, the same on every rank."""
    assert state.settings is not None and state.checks is not None
    assert state.correct is not None and state.reached is not None
    n, epsilons = len(keep), [float(e) for e in options["epsilons"]]
    accuracy = [c / n for c in state.correct]
    rows = [state.done[p] for p in keep]
    per_sample: dict[str, list] = {
        "index": keep,
        "fooled_at": [row[0] for row in rows],
        "reached_at": [row[1] for row in rows],
    }
    if options["target"] is not None:
        per_sample["target"] = [row[2] for row in rows]
    if is_main():
        for category, message in sorted(state.warnings):
            warnings.warn(message, _WARNINGS.get(category, UserWarning), stacklevel=3)
    clip = options.get("clip", attack_options(options["attack"]).get("clip", (0.0, 1.0)))
    return Curve(
        epsilons=epsilons,
        accuracy=accuracy,
        success_rate=[r / n for r in state.reached],
        clean_accuracy=state.clean_correct / n,
        n_samples=n,
        n_excluded=len(y) - n,
        settings={**state.settings, "world_size": world()[1]},
        seconds=0.0,
        checks=state.checks,
        intervals=[list(wilson(c, n)) for c in state.correct],
        per_sample=per_sample,
        flags=_model_flags(model, x, y, keep, options)
        + curve_flags(epsilons, accuracy, options["norm"], clip),
        passes=dict(state.passes),
        examples=_examples(state, keep[: max(examples, 0)]),
    )


def _model_flags(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: list[int], options: dict[str, Any]
) -> list[dict[str, str]]:
    """The flags about the model, from the first batch, as a single process finds them."""
    device = options.get("device") or next(
        (p.device for p in model.parameters()), torch.device("cpu")
    )
    first = torch.tensor(keep[: options["batch_size"]])
    xb = x[first.to(x.device)].to(device)
    return model_flags(model, xb, y[first.to(y.device)].detach().cpu().long())


def _examples(state: _Progress, positions: list[int]) -> dict[str, torch.Tensor] | None:
    if not positions:
        return None
    kept = {
        k: torch.stack([state.examples[p][k] for p in positions])
        for k in ("x", "y", "target", "x_adv")
    }
    kept["current"] = kept["x_adv"][:, -1].clone()
    return kept
