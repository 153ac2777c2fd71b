"""advkit: train course classifiers, attack them with FGSM and PGD, report robustness curves."""

__version__ = "0.1.0"

from .runs import load_run  # noqa: E402

__all__ = ["__version__", "load_run"]
