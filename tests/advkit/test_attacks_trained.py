"""Attacks on real models: an MLP and a BN-CNN trained on digits for a few seconds.

Includes a differential test against torchattacks, the reference PGD most
users know.
"""

import pytest
import torch
from torch import nn

import attacks
from advkit.data import load_dataset
from advkit.evaluate import robustness_curve

pytestmark = pytest.mark.slow

STEPS = 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module", params=["mlp", "bncnn"])
def trained(request, digits, train_digits) -> nn.Module:
    model = train_digits(digits, request.param, epochs=12)
    assert accuracy(model, digits.x_test, digits.y_test) > 0.9
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).double().mean().item()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_targeted_pgd_reaches_the_target(trained, digits):
    x, y = digits.x_test, digits.y_test
    target = (y + torch.randint(1, 10, y.shape, generator=seeded(1))) % 10
    for loss in attacks.LOSSES:
        x_adv = attacks.pgd(
            trained, x, y, 0.3, steps=40, target=target, loss=loss, generator=seeded()
        )
        with torch.no_grad():
            logits = trained(x_adv)
        reached = (logits.argmax(dim=1) == target).double().mean().item()
        if loss in ("lecture", "dlr"):
            # CE(y) - CE(t) = z_t - z_y, and the targeted DLR (z_t - z_y) / spread, pull t
            # above y but ignore the other classes, so they land on the target less often
            # (lecture ~77-89% here; DLR, scale-free, ~40% with PGD's small fixed steps,
            # ~98% with APGD's); what they optimize they do.
            above_true = logits.gather(1, target[:, None]) > logits.gather(1, y[:, None])
            lecture = loss == "lecture"
            assert above_true.double().mean().item() >= (0.95 if lecture else 0.9), loss
            assert reached >= (0.7 if lecture else 0.3), loss
        else:
            assert reached >= 0.9, loss


@pytest.mark.parametrize(("norm", "epsilons"), [("linf", (0.05, 0.1, 0.2)), ("l2", (0.5, 1.0))])
def test_pgd_is_at_least_as_strong_as_fgsm(trained, digits, norm, epsilons):
    x, y = digits.x_test, digits.y_test
    for eps in epsilons:
        pgd = accuracy(trained, attacks.pgd(trained, x, y, eps, norm=norm, generator=seeded()), y)
        fgsm = accuracy(trained, attacks.fgsm(trained, x, y, eps, norm=norm), y)
        assert pgd <= fgsm, (eps, pgd, fgsm)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.75)])
def test_restarts_are_never_weaker(trained, digits, norm, eps):
    x, y = digits.x_test, digits.y_test
    one = attacks.pgd(trained, x, y, eps, norm=norm, steps=5, generator=seeded(3))
    three = attacks.pgd(trained, x, y, eps, norm=norm, steps=5, restarts=3, generator=seeded(3))
    with torch.no_grad():
        one_fooled = trained(one).argmax(dim=1) != y
        three_fooled = trained(three).argmax(dim=1) != y
    assert (three_fooled >= one_fooled).all()
    assert three_fooled.sum() > one_fooled.sum()


def torchattacks_accuracy(model, x, y, eps, norm, random_start, seed) -> float:
    torchattacks = pytest.importorskip("torchattacks")
    attack_class = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    attack = attack_class(
        model, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS, random_start=random_start
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # torchattacks draws its random start from the global RNG
        return accuracy(model, attack(x, y), y)


@pytest.mark.parametrize("random_start", [True, False], ids=["random-start", "from-x"])
@pytest.mark.parametrize(("norm", "epsilons"), [("linf", (0.05, 0.1, 0.15)), ("l2", (0.5, 0.75))])
def test_pgd_matches_torchattacks(trained, digits, norm, epsilons, random_start):
    # Same eps, steps and step size (torchattacks' L2 eps is the radius too). From x
    # both are deterministic: any difference is the algorithm's. Random starts come
    # from other streams (ours per sample, torchattacks' from the global RNG), and one
    # draw moves L2 numbers by ~2 points: compare means over seeds instead.
    x, y = digits.x_test, digits.y_test
    seeds = range(5) if random_start else range(1)
    for eps in epsilons:
        ours = sum(
            accuracy(
                trained, attacks.pgd(
                    trained, x, y, eps, norm=norm, steps=STEPS, random_start=random_start,
                    generator=seeded(seed),
                ), y,
            )
            for seed in seeds
        ) / len(seeds)  # fmt: skip
        theirs = sum(
            torchattacks_accuracy(trained, x, y, eps, norm, random_start, seed=seed)
            for seed in seeds
        ) / len(seeds)
        assert ours <= theirs + 0.01, (eps, ours, theirs)


def test_robustness_curve_on_a_trained_model(trained, digits):
    x, y = digits.x_test, digits.y_test
    epsilons = [0, 0.05, 0.1, 0.15]
    curve = robustness_curve(trained, x, y, epsilons, steps=STEPS)
    scratch = robustness_curve(trained, x, y, epsilons, steps=STEPS, incremental=False)
    assert curve.clean_accuracy == accuracy(trained, x, y)
    assert curve.accuracy == sorted(curve.accuracy, reverse=True)
    assert curve.accuracy[-1] < 0.5 * curve.accuracy[0]
    for ours, fresh in zip(curve.accuracy, scratch.accuracy, strict=True):
        assert ours <= fresh + 0.01
