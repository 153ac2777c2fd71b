"""advkit: train course classifiers, attack them with FGSM and PGD, report robustness curves.

from advkit import robustness_curve, load_run
model, config = load_run("runs/bncnn-adam")
curve = robustness_curve(model, x, y, epsilons=[0, 0.05, 0.1], attack="pgd", norm="linf")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Curve", "__version__", "load_run", "robustness_curve"]

if TYPE_CHECKING:
    from .evaluate import Curve, robustness_curve
    from .runs import load_run

# Loaded on first use, so that `import advkit` (and the `advkit` command, which
# imports this package first) does not load torch: the command sets OpenMP's
# environment before torch starts it (advkit/cli/__init__.py).
_LAZY = {"Curve": "evaluate", "robustness_curve": "evaluate", "load_run": "runs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
