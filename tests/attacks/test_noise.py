"""Per-sample randomness: a sample's draws, and so its adversarial example, depend only on its seed."""

import pytest
import torch

import attacks
from attacks.noise import Noise

SEEDS = torch.tensor([3, -7, 2**62 + 5, 0, 11, 12])


def test_draws_are_per_sample_and_reproducible():
    noise = Noise(SEEDS)
    u = noise.uniform((50,), "a", 1)
    assert u.shape == (6, 50) and 0 < u.min() and u.max() < 1
    assert torch.equal(u, Noise(SEEDS).uniform((50,), "a", 1))
    assert torch.equal(u[[4, 1]], noise.select(torch.tensor([4, 1])).uniform((50,), "a", 1))
    assert not torch.equal(u, noise.uniform((50,), "a", 2))  # another stream
    assert not torch.equal(u[0], u[1])  # another sample


def test_draws_have_the_right_distributions():
    noise = Noise(torch.arange(4000))
    u = noise.uniform((8,), "u")
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.003
    z = noise.normal((8,), "z")
    assert abs(z.mean().item()) < 0.03 and abs(z.var().item() - 1) < 0.05
    k = noise.integers(2, 5, "k")
    assert torch.bincount(k - 2, minlength=4).min() > 900 and k.max() == 5
    signs = noise.signs((8,), "s")
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and abs(signs.mean().item()) < 0.03
    forked = noise.fork("restart", 1).seeds
    assert forked.unique().numel() == 4000 and (forked >= 0).all()


def test_seeds_must_be_integers_of_the_batch_shape():
    x = torch.zeros(3, 2)
    for bad in (torch.zeros(3), torch.zeros(2, dtype=torch.int64), [1, 2, 3]):
        with pytest.raises(ValueError, match="seeds"):
            Noise.of(x, seeds=bad)


class Exact(torch.nn.Module):
    """A small float64 two-layer net written with elementwise products and sums.

    Matrix products may round differently for different batch sizes (a BLAS
    kernel for one row is not the one for seven), which L2 steps would carry
    into the result; this model computes each sample's logits and gradient
    the same way in any batch, so the test sees only the attack's randomness.
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(12, 36, generator=generator, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(5, 12, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = (x.flatten(1)[:, None, :] * self.w1).sum(-1).relu()  # (N, 12)
        return (hidden[:, None, :] * self.w2).sum(-1)  # (N, 5)


def model() -> torch.nn.Module:
    return Exact().eval()


CASES = {
    "pgd": {"steps": 4, "restarts": 2},
    "apgd": {"steps": 4, "restarts": 2},
    "square": {"queries": 30},
    "mifgsm": {"steps": 4, "diversity": 0.7},
    "strong": {"steps": 4, "targeted_steps": 3, "queries": 20},
}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(
    "name",
    # square (queries) and strong (a sequence of attacks) take seconds: in the full suite.
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("square", "strong") else n
        for n in sorted(CASES)
    ],
)
def test_result_of_a_sample_does_not_depend_on_the_batch(name, norm):
    net = model()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(20, 1, 6, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (20,), generator=generator)
    seeds = torch.arange(20) * 1_000_003 + 17
    eps = 0.1 if norm == "linf" else 0.6

    def attack(index: torch.Tensor) -> torch.Tensor:
        options = {"norm": norm, "seeds": seeds[index], **CASES[name]}
        return attacks.ATTACKS[name](net, x[index], y[index], eps, **options)

    whole = attack(torch.arange(20))
    assert not torch.equal(whole, x)
    for size in (1, 7):
        parts = torch.cat([attack(i) for i in torch.arange(20).split(size)])
        assert torch.equal(parts, whole), size
    order = torch.randperm(20, generator=generator)
    assert torch.equal(attack(order), whole[order])
    other = attacks.ATTACKS[name](net, x, y, eps, norm=norm, seeds=seeds + 1, **CASES[name])
    assert not torch.equal(other, whole)  # the seeds drive the draws
