"""Run directories: atomic files, config, weights, training checkpoints.

::

    runs/NAME/
      config.json          everything needed to rebuild and retrain
      model.safetensors    weights (never pickle)
      metrics.jsonl        one JSON object per epoch
      summary.json         test accuracy, parameter count, time (when training finished)
      checkpoint.safetensors  training state for --resume (removed when training finishes)
      attacks/*.json, figures/*.png

Every file is written atomically: a temporary file in the same directory, then
``os.replace``, so an interrupted process never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import models

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.safetensors"


class RunError(ValueError):
    """A run directory that is missing, corrupt or does not match its config."""


# --- atomic files ------------------------------------------------------------


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any error (or KeyboardInterrupt) the temporary file is removed and
    ``path`` keeps its old content. The file gets the permissions of any file
    the user creates (0666 less the umask), even when the writer replaced the
    temporary file with one of its own (safetensors' ``save_file`` makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` with the user's permissions.

    Opened with mode 0666 so the kernel applies the process umask, as for any
    file the user creates (``tempfile.mkstemp`` would make it 0600, and reading
    the umask means changing it).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _dumps(path: str | os.PathLike, obj: Any, **kw: Any) -> str:
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError as e:  # NaN or infinity: JSON has no such numbers
        raise ValueError(f"cannot write {path}: {e}") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, _dumps(path, obj, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunError(f"{path}:{i} is not valid JSON ({e})") from None
    return rows


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text(path, "".join(_dumps(path, r) + "\n" for r in rows))


# Where the data was read from and its checksum: checked on their own (a run
# moved with its data is the same run; changed data is refused when resuming).
PROVENANCE = ("sha256", "path", "path_from_run")


def config_hash(config: dict) -> str:
    """A short hash of what determines a run's result.

    Not versions, times, device, number of processes or data paths.
    """
    keep = {
        k: v
        for k, v in config.items()
        if k in ("model", "dataset", "optimizer", "schedule", "training")
    }
    training = dict(keep.get("training", {}))
    training.pop("device", None)
    training.pop("world_size", None)  # the same run on any number of processes
    keep["training"] = training
    if isinstance(keep.get("dataset"), dict):
        keep["dataset"] = {k: v for k, v in keep["dataset"].items() if k not in PROVENANCE}
    blob = json.dumps(keep, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def timing_context(device: str | torch.device) -> dict[str, Any]:
    """What a measured time depends on besides the work: torch's CPU threads and the device.

    Record it beside every ``seconds`` (summary.json, attack records).
    """
    return {"threads": torch.get_num_threads(), "device": str(device)}


# --- weights -----------------------------------------------------------------


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage: save private copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        save_file(_state_tensors(model), str(tmp))


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or foreign file raises RunError."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(f"{path} is not a valid safetensors file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def build_model(config: dict) -> torch.nn.Module:
    try:
        spec = config["model"]
        name, shape, k = spec["name"], tuple(spec["input_shape"]), spec["num_classes"]
        options = spec.get("options", {})
        if not isinstance(options, dict):
            raise TypeError(f"options must be an object, got {options!r}")
    except (KeyError, TypeError, AttributeError) as e:
        raise RunError(f"config has no valid 'model' entry ({e})") from None
    # Outside the try: the model's own errors (a bad option value) keep their message.
    return models.build(name, input_shape=shape, num_classes=k, **options)


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    state = read_safetensors(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RunError(
            f"{path} does not match the model in config.json ({_first_line(e).rstrip(':.')})"
        ) from None


def load_run(path: str | os.PathLike, *, device: str | torch.device = "cpu"):
    """Rebuild a trained model from its run directory.

    Args:
        path: a run directory written by ``advkit train``.
        device: where to put the model.

    Returns:
        ``(model, config)``: the model in eval mode with the saved weights, and
        the parsed ``config.json``.

    Raises:
        RunError: the directory, config or weights are missing, corrupt or do
            not match each other.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory {str(path)!r} does not exist")
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise RunError(f"{path / CONFIG} does not hold a run config")
    model = build_model(config)
    load_weights(model, path / WEIGHTS)
    return model.to(device).eval(), config


# --- training checkpoints (no pickle: tensors in safetensors, the rest as JSON) ----


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict,
    rng: dict[str, torch.Tensor],
) -> None:
    tensors = {f"model.{k}": v for k, v in _state_tensors(model).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    for name, state in rng.items():
        tensors[f"rng.{name}"] = state.cpu().clone()
    meta = {
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"advkit": json.dumps(meta)})


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Return ``{"model", "optimizer", "scheduler", "extra", "rng"}`` state dicts.

    The model tensors are checked against the ``config.json`` beside the
    checkpoint, and the rest against the layout :func:`save_checkpoint` writes,
    so a corrupt or foreign checkpoint raises RunError instead of failing
    halfway through restoring the training state.
    """
    from safetensors import safe_open

    path = Path(path)
    tensors = read_safetensors(path)

    def bad(what: str) -> RunError:
        return RunError(f"{path} is not an advkit checkpoint ({what})")

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["advkit"])
    except KeyError:
        raise bad("no 'advkit' metadata") from None
    except json.JSONDecodeError as e:
        raise bad(f"metadata is not valid JSON: {e}") from None
    layout = {"param_groups": list, "optim_scalars": dict, "scheduler": dict, "extra": dict}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in layout.items()):
        raise bad(f"metadata must hold {', '.join(layout)}")
    extra = meta["extra"]
    for key in ("epoch", "rows", "best_val", "bad_epochs", "seconds"):
        if key not in extra:
            raise bad(f"metadata lacks extra.{key}")
    state: dict[int, dict[str, Any]] = {}
    model_state, rng = {}, {}
    try:
        for pid, values in meta["optim_scalars"].items():
            state.setdefault(int(pid), {}).update(values)
        for key, value in tensors.items():
            kind, _, rest = key.partition(".")
            if kind == "model":
                model_state[rest] = value
            elif kind == "optim":
                pid, _, name = rest.partition(".")
                state.setdefault(int(pid), {})[name] = value
            elif kind == "rng":
                rng[rest] = value
    except (ValueError, TypeError, AttributeError) as e:
        raise bad(f"malformed optimizer state: {e}") from None
    for name in ("shuffle", "torch"):
        try:
            torch.Generator().set_state(rng[name])
        except KeyError:
            raise bad(f"no rng.{name} state") from None
        except (RuntimeError, TypeError) as e:
            raise bad(f"rng.{name} is not a generator state: {_first_line(e)}") from None
    _check_model_state(model_state, path)
    return {
        "model": model_state,
        "optimizer": {"state": state, "param_groups": meta["param_groups"]},
        "scheduler": meta["scheduler"],
        "extra": extra,
        "rng": rng,
    }


def _check_model_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise RunError unless ``state`` fits the model of the config beside ``path``."""
    config = read_json(path.parent / CONFIG)
    if not isinstance(config, dict):
        raise RunError(f"{path.parent / CONFIG} does not hold a run config")
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = build_model(config).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    wanted = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != wanted:
        differ = sorted(k for k in set(shapes) | set(wanted) if shapes.get(k) != wanted.get(k))
        raise RunError(
            f"{path} does not match the model in config.json "
            f"({len(differ)} tensors differ, e.g. {differ[0]!r}: "
            f"{shapes.get(differ[0])} in the file, {wanted.get(differ[0])} in the model)"
        )
