"""advkit: train course classifiers, attack them with FGSM and PGD, report robustness curves.

from advkit import robustness_curve, load_run
model, config = load_run("runs/bncnn-adam")
curve = robustness_curve(model, x, y, epsilons=[0, 0.05, 0.1], attack="pgd", norm="linf")
"""

__version__ = "0.1.0"

from .evaluate import Curve, robustness_curve  # noqa: E402
from .runs import load_run  # noqa: E402

__all__ = ["Curve", "__version__", "load_run", "robustness_curve"]
