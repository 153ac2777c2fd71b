"""Adversarial training: the examples a training step fits, and robust validation.

Three modes of `advkit train --adversarial` (``TrainConfig.adversarial``):

- ``pgd``: Madry et al. 2018 (https://arxiv.org/abs/1706.06083). Each batch is
  replaced by PGD examples crafted against the current weights (`attacks.pgd`,
  which runs the model in eval mode, so batch-norm statistics are updated by
  the training pass only, on the examples trained on).
- ``fgsm-rs``: Wong et al. 2020, "Fast is better than free"
  (https://arxiv.org/abs/2001.03994): one FGSM step of 1.25 eps from a uniform
  random start in the eps-box (`fgsm_rs_example`: PGD with one step, without
  the per-call overhead of `attacks.pgd`), about twice the cost of standard
  training. Known to collapse suddenly ("catastrophic overfitting");
  the training loop guards it with `collapsed`.
- ``trades``: Zhang et al. 2019 (https://arxiv.org/abs/1901.08573): clean
  cross-entropy plus ``beta * KL(p(x) || p(x_adv))``, the inner maximization
  on the KL term.

Randomness (random starts) comes from a generator derived from the run's seed,
the epoch and the batch (`batch_generator`), so a resumed run draws exactly
what an uninterrupted one does without storing any generator state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import attacks
from attacks import norms

from .data import batches

MODES = ("none", "pgd", "fgsm-rs", "trades")
# Validation attack: PGD with this many steps at the training eps, on the first
# VAL_SAMPLES validation samples (the catastrophic-overfitting guard's measure).
VAL_STEPS = 10
VAL_SAMPLES = 256
DEFAULT_STEPS = {"pgd": 10, "fgsm-rs": 1, "trades": 10}
DEFAULT_TRADES_BETA = 6.0
# FGSM-RS steps 1.25 eps (Wong et al.), a fraction of eps for the others' default.
FGSM_RS_STEP = 1.25
# A collapse is also a real drop, not the noise of a few validation samples.
COLLAPSE_MIN_DROP = 0.1


def batch_generator(
    seed: int, epoch: int, batch: int, *, shard: int = 0, shards: int = 1
) -> torch.Generator:
    """A CPU generator for one batch's random starts, a function of (seed, epoch, batch) only.

    Under DistributedDataParallel each of ``shards`` processes crafts the
    examples of its ``shard`` of the batch and draws from its own generator;
    with one shard it is the single-process generator. The random starts (not
    the samples) therefore depend on the number of processes.
    """
    mixed = (seed * 1_000_003 + epoch * 65_537 + batch * 257 + 12_345) % (2**63 - 1)
    if shards > 1:
        mixed = (mixed * 31 + shards * 1_009 + shard * 7_919 + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def eps_at(adv_eps: float, warmup: int, epoch: int) -> float:
    """The training eps of ``epoch`` (0-based): a linear ramp over ``warmup`` epochs, then ``adv_eps``."""
    if warmup <= 0:
        return adv_eps
    return adv_eps * min(1.0, (epoch + 1) / (warmup + 1))


def step_size(mode: str, eps: float, steps: int, given: float | None) -> float | None:
    """The inner attack's step: ``given``, else 1.25 eps for FGSM-RS, else PGD's default (None)."""
    if given is not None:
        return given
    if mode == "fgsm-rs":
        return FGSM_RS_STEP * eps
    return 2.5 * eps / steps if mode == "trades" else None


def training_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mode: str,
    eps: float,
    norm: str,
    steps: int,
    size: float | None,
    beta: float,
    random_start: bool,
    generator: torch.Generator,
    attack_model: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss a training step minimizes, and the logits its accuracy is counted on.

    ``none``: cross-entropy on ``x``. ``pgd``/``fgsm-rs``: cross-entropy on the
    adversarial batch (its logits are returned). ``trades``: clean cross-entropy
    plus ``beta`` times the KL term (the clean logits are returned). The model
    is called in whatever mode it is in (train mode in the training loop);
    the inner attacks run it in eval mode. ``attack_model`` (default ``model``)
    crafts the examples: the plain module when ``model`` is its
    DistributedDataParallel wrapper, whose forward passes are for training.

    Shape:
        x `(N, ...)`, y `(N,)` -> a scalar and `(N, K)`.
    """
    if mode == "none" or eps <= 0 and mode != "trades":
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    crafter = model if attack_model is None else attack_model
    if mode == "fgsm-rs":
        x_adv = fgsm_rs_example(
            crafter, x, y, eps, norm=norm, size=size, random_start=random_start,
            generator=generator,
        )  # fmt: skip
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
    if mode == "pgd":
        x_adv = attacks.pgd(
            crafter, x, y, eps, norm=norm, steps=steps, step_size=size,
            random_start=random_start, generator=generator,
        )  # fmt: skip
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
    if mode == "trades":
        x_adv = trades_example(
            crafter, x, eps, norm=norm, steps=steps, size=size, generator=generator
        )
        logits = model(x)
        adv_logits = model(x_adv)
        return F.cross_entropy(logits, y) + beta * trades_kl(logits, adv_logits), logits
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def fgsm_rs_example(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str,
    size: float | None,
    random_start: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """FGSM-RS's training example: one gradient step of ``size`` from a random start.

    The start is uniform in the L-inf box of radius ``eps`` (L2: a uniform
    direction and a radius uniform in ``[0, eps]``, as `attacks.norms.random_start`),
    or ``x`` itself without ``random_start``; then one step of ``size``
    (default 1.25 eps) along the sign of the cross-entropy's gradient (L2:
    the normalized gradient), projected onto the eps-ball and clipped to
    [0, 1]. The same example as ``attacks.pgd(steps=1)`` with a different
    draw of the start, built lean for a training loop where a standard batch
    costs a few milliseconds: no argument checks (the training config was
    checked), the start drawn from ``generator`` in one call, the gradient
    taken with respect to the input only, and the model run in eval mode
    (`attacks.eval_mode`) and left as found.

    Shape:
        x `(N, ...)`, y `(N,)` -> `(N, ...)`, detached.
    """
    x = x.detach()
    budgets = torch.full((len(x),), float(eps), dtype=x.dtype, device=x.device)
    ball = norms.ball(x, budgets, norm, (0.0, 1.0))
    point = ball.project(x + start_offset(x, eps, norm, generator)) if random_start else x
    point = point.detach().requires_grad_(True)
    with attacks.eval_mode(model), torch.enable_grad():
        loss = F.cross_entropy(attacks.logits_of(model(point)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, point)
    size = FGSM_RS_STEP * eps if size is None else size
    return ball.step(point.detach(), grad, torch.full_like(budgets, float(size))).detach()


def start_offset(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator
) -> torch.Tensor:
    """A random offset in the eps-ball, drawn on the CPU from ``generator``, on ``x``'s device.

    L-inf: each coordinate uniform in ``[-eps, eps]``; L2: a Gaussian direction
    scaled to a radius uniform in ``[0, eps]``.
    """
    if norm == "linf":
        draw = torch.rand(x.shape, generator=generator, dtype=x.dtype)
        return ((2 * draw - 1) * eps).to(x.device)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    length = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
    radius = eps * torch.rand((len(x),), generator=generator, dtype=x.dtype)
    scale = (radius / length).view(-1, *([1] * (x.ndim - 1)))
    return (direction * scale).to(x.device)


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p(x) || p(x_adv))`` averaged over the batch (TRADES' robustness term)."""
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1), F.log_softmax(clean_logits, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip


def trades_example(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    *,
    norm: str,
    steps: int,
    size: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """TRADES' inner maximization: the point of the eps-ball that maximizes the KL term.

    Starts at ``x`` plus a small Gaussian (0.001, as the reference code: the KL
    gradient is zero at ``x`` itself), then ``steps`` steps of ``size``
    (default ``2.5 eps / steps``) projected onto the ball and clipped to [0, 1].
    The model runs in eval mode with its parameters frozen and is left as found.

    Shape:
        x `(N, ...)` -> `(N, ...)`, detached.
    """
    if eps <= 0:
        return x.detach().clone()
    x = x.detach()
    size = 2.5 * eps / steps if size is None else size
    budgets = torch.full((len(x),), float(eps), dtype=x.dtype, device=x.device)
    ball = norms.ball(x, budgets, norm, (0.0, 1.0))
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    point = ball.project(x + 0.001 * noise)
    sizes = torch.full_like(budgets, float(size))
    with attacks.attack_mode(model), torch.enable_grad():
        clean = attacks.logits_of(model(x)).detach()
        for _ in range(steps):
            point = point.detach().requires_grad_(True)
            kl = trades_kl(clean, attacks.logits_of(model(point)))
            (grad,) = torch.autograd.grad(kl, point)
            point = ball.step(point.detach(), grad, sizes)
    return point.detach()


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    seed: int,
    steps: int = VAL_STEPS,
    batch_size: int = 256,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy under PGD-``steps`` at ``eps`` (random start from ``seed``).

    The same seed every epoch, so epochs are compared on the same starts.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    loss, correct = 0.0, 0.0
    for idx in batches(len(y), batch_size):
        xb, yb = x[idx].to(device), y[idx].to(device)
        x_adv = attacks.pgd(model, xb, yb, eps, norm=norm, steps=steps, generator=generator)
        with torch.no_grad(), attacks.eval_mode(model):
            logits = attacks.logits_of(model(x_adv))
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    n = max(1, len(y))
    return correct / n, loss / n


def collapsed(robust: float, best: float | None, guard: float) -> bool:
    """Catastrophic overfitting: robust accuracy fell below ``guard`` times the best so far.

    The fall must also be at least ``COLLAPSE_MIN_DROP`` (a few validation
    samples changing their minds is not a collapse). ``guard`` 0 turns the
    check off.
    """
    if guard <= 0 or best is None or best <= 0:
        return False
    if not math.isfinite(robust):
        return True
    return robust < guard * best and best - robust >= COLLAPSE_MIN_DROP


def describe(c: Any) -> dict[str, Any] | None:
    """The training attack and the validation attack, for config.json (None without one)."""
    if c.adversarial == "none":
        return None
    return {
        "mode": c.adversarial,
        "eps": c.adv_eps,
        "norm": c.adv_norm,
        "steps": c.adv_steps,
        "step_size": c.adv_step_size,
        "random_start": c.adv_random_start,
        "trades_beta": c.trades_beta,
        "eps_warmup": c.adv_eps_warmup,
        "overfit_guard": c.overfit_guard,
        "validation": {
            "attack": "pgd",
            "eps": c.adv_eps,
            "norm": c.adv_norm,
            "steps": VAL_STEPS,
            "step_size": None,
            "random_start": True,
            "samples": VAL_SAMPLES,
            "seed": c.seed,
        },
    }
