"""The official AutoAttack (the `pyautoattack` package) as the strong suite's reference.

`pyautoattack` ships AutoAttack's attack files unchanged (only its
`autoattack.py` wrapper is rewritten), so the standard evaluation is built
here from those classes exactly as the wrapper's `version="standard"` runs
it: APGD-CE (100 iterations, 1 restart), APGD-T (9 target classes, 100
iterations), FAB-T (9 target classes), Square (5000 queries, p_init 0.8),
each on the samples every attack before it left robust, in batches of 250.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from torch import nn

NORMS = {"linf": "Linf", "l2": "L2"}
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
BATCH = 250  # the wrapper's default batch size


@dataclass
class Evaluation:
    """Which samples survived, and per stage the seconds spent and the survivors left."""

    robust: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.robust.float().mean())

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def standard_attacks(model: nn.Module, eps: float, norm: str, seed: int) -> dict[str, Any]:
    """AutoAttack's four standard attacks, configured as `version="standard"` sets them."""
    n = NORMS[norm]
    common = {"eps": eps, "norm": n, "seed": seed, "verbose": False, "device": None}
    return {
        "apgd-ce": APGDAttack(model, n_restarts=1, n_iter=100, loss="ce", rho=0.75, **common),
        "apgd-t": APGDAttack_targeted(
            model, n_restarts=1, n_iter=100, n_target_classes=9, rho=0.75, **common
        ),
        "fab-t": FABAttack_PT(
            model, n_restarts=1, n_iter=100, targeted=True, n_target_classes=9, **common
        ),
        "square": SquareAttack(
            model, p_init=0.8, n_queries=5000, n_restarts=1, resc_schedule=False, **common
        ),
    }


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str,
    seed: int = 0,
    only: tuple[str, ...] = STANDARD,
) -> Evaluation:
    """Run AutoAttack's standard sequence (or the stages `only`) on survivors, timing each."""
    model.eval()
    ran = standard_attacks(model, eps, norm, seed)
    with torch.no_grad():
        robust = model(x).argmax(dim=1) == y
    result = Evaluation(robust)
    for name in only:
        started = time.perf_counter()
        todo = robust.nonzero().squeeze(1)
        for batch in todo.split(BATCH):
            # The attacks seed the global generator: restored afterwards.
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                point = ran[name].perturb(x[batch].clone(), y[batch].clone())
                fooled = model(point).argmax(dim=1) != y[batch]
            robust[batch[fooled]] = False
        result.seconds[name] = time.perf_counter() - started
        result.left[name] = int(robust.sum())
    return result


def apgd_ce_from(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, start: torch.Tensor, *,
    norm: str, seed: int = 0,
) -> torch.Tensor:  # fmt: skip
    """AutoAttack's APGD-CE (100 iterations, 1 restart) from the given start, on all of `x`.

    With `attacks.apgd`'s own random start this takes the same path as `attacks.apgd`
    (the start is the only random part), so the two can be compared sample for sample.
    """
    attack = standard_attacks(model, eps, norm, seed)["apgd-ce"]
    attack.init_hyperparam(x)
    points = []
    for rows in torch.arange(len(x)).split(BATCH):
        with torch.random.fork_rng(devices=[]):
            *_, point = attack.attack_single_run(x[rows].clone(), y[rows].clone(), start[rows])
        points.append(point)
    return torch.cat(points)
