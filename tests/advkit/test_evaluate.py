import json
import warnings

import pytest
import torch
from torch import nn

from advkit.evaluate import Curve, _targets, robustness_curve
from attacks.noise import Noise

EPSILONS = [0.0, 0.05, 0.1, 0.2, 0.4]
CLASSES = 5


def make_model(seed: int = 0) -> nn.Module:
    """A small BN-MLP on `(N, 1, 4, 4)` inputs, handed over in train mode."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, CLASSES)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        model(torch.rand(32, 1, 4, 4, generator=generator))
    return model.train()


@pytest.fixture
def model() -> nn.Module:
    return make_model()


@pytest.fixture
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    """120 inputs; labels are the model's prediction for about 80% of them, random otherwise."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(120, 1, 4, 4, generator=generator)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    noisy = torch.rand(120, generator=generator) < 0.2
    y[noisy] = torch.randint(0, CLASSES, (int(noisy.sum()),), generator=generator)
    return x, y


def clean_accuracy(model, x, y) -> float:
    with torch.no_grad():
        model.eval()
        accuracy = (model(x).argmax(1) == y).double().mean().item()
        model.train()
    return accuracy


def is_monotone(curve: Curve) -> bool:
    return curve.accuracy == sorted(curve.accuracy, reverse=True) and curve.success_rate == sorted(
        curve.success_rate
    )


@pytest.mark.parametrize("target", [None, "random", "least-likely", 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_curve_is_non_increasing_and_starts_at_clean_accuracy(model, data, attack, norm, target):
    x, y = data
    eps = [*EPSILONS, 1.0] if norm == "linf" else [4 * e for e in [*EPSILONS, 1.0]]
    options = {"steps": 5} if attack == "pgd" else {}
    curve = robustness_curve(
        model, x, y, eps, attack=attack, norm=norm, target=target, batch_size=32, **options
    )
    assert is_monotone(curve)
    keep = y != target if isinstance(target, int) else torch.ones_like(y, dtype=torch.bool)
    assert curve.accuracy[0] == curve.clean_accuracy == clean_accuracy(model, x[keep], y[keep])
    assert curve.accuracy[-1] < curve.accuracy[0]
    if target is None:
        assert curve.success_rate == [pytest.approx(1 - a) for a in curve.accuracy]
    else:
        assert curve.success_rate[-1] > curve.success_rate[0]
    assert model.training  # handed back as it came


def test_int_target_leaves_out_samples_of_that_class(model, data):
    x, y = data
    curve = robustness_curve(model, x, y, [0, 0.1], target=2)
    excluded = int((y == 2).sum())
    assert excluded > 0
    assert (curve.n_samples, curve.n_excluded) == (len(y) - excluded, excluded)
    assert curve.settings["target"] == 2


def test_same_seed_same_curve_whatever_the_global_rng(model, data):
    x, y = data
    torch.manual_seed(1)
    first = robustness_curve(model, x, y, EPSILONS, target="random", seed=3)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = robustness_curve(model, x, y, EPSILONS, target="random", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert (first.accuracy, first.success_rate, first.checks) == (
        second.accuracy,
        second.success_rate,
        second.checks,
    )


def test_seed_drives_the_random_choices(model, data):
    x, y = data
    curves = [
        robustness_curve(model, x, y, [0.1, 0.2], target="random", seed=s, steps=3).success_rate
        for s in range(4)
    ]
    assert len({tuple(c) for c in curves}) > 1


def test_random_targets_are_uniform_over_the_wrong_classes():
    y = torch.randint(0, 4, (8000,), generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(8000, 4)
    targets = _targets("random", y, logits, Noise(torch.arange(8000) + 1))
    assert not (targets == y).any()
    counts = torch.bincount((targets - y) % 4, minlength=4)
    assert counts[0] == 0 and ((counts[1:] - 8000 / 3).abs() < 200).all()


def test_least_likely_target_is_the_least_probable_wrong_class():
    logits = torch.tensor([[0.0, -3.0, 1.0, -1.0], [5.0, 0.0, 1.0, 2.0], [-9.0, 0.0, 1.0, 2.0]])
    y = torch.tensor([0, 1, 0])
    targets = _targets("least-likely", y, logits, Noise(torch.arange(3)))
    # Sample 2's least probable class is its true class 0, so it gets the next one.
    assert targets.tolist() == [1, 2, 1]


def test_incremental_is_at_least_as_strong_as_from_scratch(model, data):
    # What is guaranteed, per sample: the descend method attacks every sample at the
    # largest eps with the same per-sample seeds as from scratch, and early stopping
    # keeps the first success of the same trajectory, so a sample from scratch breaks
    # there breaks there too; it then walks each broken sample down, attacking at each
    # eps with that eps's seeds. So a sample that from scratch breaks at eps and at
    # every larger eps breaks at eps or below in the incremental curve. (One that from
    # scratch breaks at eps but survives a larger one may not be walked down to eps.)
    x, y = data
    n = len(y)
    for norm, scale in (("linf", 1), ("l2", 4)):
        eps = [scale * e for e in EPSILONS]
        incremental = robustness_curve(model, x, y, eps, norm=norm, steps=10)
        scratch = robustness_curve(
            model, x, y, eps, norm=norm, steps=10, incremental=False, examples=n
        )
        assert scratch.settings["incremental"] is False and scratch.settings["early_stop"] is False
        assert incremental.settings["early_stop"] is True
        with torch.no_grad():
            model.eval()
            x_adv = scratch.examples["x_adv"]  # (n, eps, ...): the point found at each eps
            fooled = torch.stack([model(x_adv[:, i]).argmax(1) != y for i in range(len(eps))], 1)
            model.train()
        assert (~fooled).double().mean(0).tolist() == pytest.approx(scratch.accuracy)
        # Fooled from scratch at this eps and at every larger one.
        from_the_top = fooled.flip(1).cumprod(1).flip(1).bool()
        broken_at = torch.tensor(incremental.per_sample["fooled_at"], dtype=torch.float64)
        for i, e in enumerate(eps):
            assert from_the_top[:, i].any()  # something to compare at every eps
            missed = from_the_top[:, i] & ~(broken_at <= e)
            assert not missed.any(), (norm, e, missed.nonzero().flatten().tolist())
        # Here no sample breaks from scratch only below a budget it survives, so the
        # guarantee covers every success and the curve is at least as strong, no slack.
        assert torch.equal(from_the_top, fooled)
        for a, b in zip(incremental.accuracy, scratch.accuracy, strict=True):
            assert a <= b


def test_per_eps_attacks_only_samples_not_yet_fooled(model, data):
    x, y = data
    calls = []
    curve = robustness_curve(
        model,
        x,
        y,
        EPSILONS,
        method="per-eps",
        batch_size=16,
        progress=lambda i, done, total: calls.append((i, done, total)),
    )
    totals = {i: total for i, _, total in calls}
    n = len(y)
    assert totals[0] == 0  # eps 0 attacks nothing
    for i in range(1, len(EPSILONS)):
        # Eps i attacks exactly those still classified correctly at eps i-1.
        assert totals[i] == round(curve.accuracy[i - 1] * n)
        assert curve.checks[i]["attacked"] == totals[i]
        dones = [done for j, done, _ in calls if j == i]
        assert dones == sorted(dones) and dones[-1] == totals[i]
        assert all(b - a <= 16 for a, b in zip([0, *dones], dones, strict=False))


def test_batches_never_exceed_batch_size_and_the_curve_does_not_depend_on_it(model, data):
    x, y = data
    seen = []

    class Recorder(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(len(x))
            return self.inner(x)

    curves = [
        robustness_curve(Recorder(model), x, y, EPSILONS, batch_size=b, random_start=False)
        for b in (7, 50)
    ]
    assert max(seen) <= 50
    assert curves[0].accuracy == curves[1].accuracy
    fgsm = [robustness_curve(model, x, y, EPSILONS, attack="fgsm", batch_size=b) for b in (7, 50)]
    assert fgsm[0].accuracy == fgsm[1].accuracy


def test_checks_record_budget_nans_and_range(model, data):
    x, y = data
    curve = robustness_curve(model, x, y, EPSILONS, norm="linf")
    assert [c["eps"] for c in curve.checks] == EPSILONS
    for eps, check in zip(EPSILONS, curve.checks, strict=True):
        assert check["max_norm"] <= eps + 1e-6
        assert check["nan_count"] == 0
        assert 0 <= check["min"] <= check["max"] <= 1
    assert curve.checks[-1]["max_norm"] > 0.39


def test_curve_round_trips_through_json(model, data):
    x, y = data
    curve = robustness_curve(model, x, y, [0, 0.1], target=1, restarts=2, clip=(0.0, 1.0))
    text = json.dumps(curve.to_dict())
    again = Curve.from_dict(json.loads(text))
    assert again == curve
    settings = again.settings
    assert settings["attack"] == "pgd" and settings["norm"] == "linf" and settings["target"] == 1
    assert settings["steps"] == 10 and settings["restarts"] == 2 and settings["seed"] == 0
    assert settings["clip"] == [0.0, 1.0] and settings["step_size"] is None
    assert settings["random_start"] is True and settings["batch_size"] == 256
    assert settings["loss"] == "ce" and "generator" not in settings


def test_from_dict_names_missing_fields():
    with pytest.raises(ValueError, match="accuracy"):
        Curve.from_dict({"epsilons": [0.0]})


def test_probability_outputs_are_warned_about(model, data):
    x, y = data
    with pytest.warns(UserWarning, match="probabilities"):
        robustness_curve(nn.Sequential(model, nn.Softmax(dim=1)), x, y, [0, 0.1], steps=2)


def test_stochastic_models_are_warned_about(model, data):
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x) + torch.randn(len(x), CLASSES)

    x, y = data
    with pytest.warns(UserWarning, match="differ"):
        robustness_curve(Noisy(), x, y, [0, 0.1], steps=2)


def test_an_ordinary_model_gives_no_warning(model, data):
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        robustness_curve(model, x, y, [0, 0.1], steps=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilons": [0.1, 0.05]}, "epsilons"),
        ({"epsilons": [-0.1]}, "epsilons"),
        ({"epsilons": []}, "epsilons"),
        ({"epsilons": [float("nan")]}, "epsilons"),
        ({"attack": "cw"}, "attack"),
        ({"norm": "l1"}, "norm"),
        ({"target": "everything"}, "target"),
        ({"target": 7}, "target"),
        ({"target": -1}, "target"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": 1.5}, "seed"),
        ({"generator": torch.Generator()}, "generator"),
        ({"stepz": 3}, "stepz"),
        ({"attack": "fgsm", "steps": 3}, "steps"),
        ({"y": torch.zeros(3, dtype=torch.int64)}, "y"),
        ({"y": torch.full((120,), 9)}, "y"),
        ({"x": torch.rand(120, 16).long()}, "x"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(model, data, kwargs, match):
    x, y = data
    arguments = {"x": x, "y": y, **kwargs}
    with pytest.raises(ValueError, match=match):
        robustness_curve(model, arguments.pop("x"), arguments.pop("y"), **arguments)


def test_int_target_that_leaves_nothing_is_refused(model, data):
    x, _ = data
    with pytest.raises(ValueError, match="target"):
        robustness_curve(model, x, torch.full((len(x),), 2), [0, 0.1], target=2)


class Bump(nn.Module):
    """1-D input; class 0 wins at 0.5 and at 1.0, class 1 in a bump around 0.75, class 2 never.

    A targeted attack toward class 2 (margin loss: z_2 grows with x, the best other
    logit is the constant z_0 at x = 0.5) walks right, through the bump and out again.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0]
        return torch.stack([torch.full_like(x, 3.0), 5 - 10 * (x - 0.75).abs(), x], dim=1)


def test_targeted_curve_keeps_misclassifications_found_at_smaller_eps():
    x, y = torch.tensor([[0.5]]), torch.tensor([0])
    options = {"attack": "fgsm", "target": 2, "loss": "margin"}
    # FGSM lands on x = 0.75 (class 1) at eps 0.25 and on x = 1.0 (class 0) at eps 0.5.
    scratch = robustness_curve(Bump(), x, y, [0, 0.25, 0.5], incremental=False, **options)
    assert scratch.accuracy == [1.0, 0.0, 1.0]
    # The point found at 0.25 lies in the 0.5-ball too, so it still counts there.
    curve = robustness_curve(Bump(), x, y, [0, 0.25, 0.5], **options)
    assert curve.accuracy == [1.0, 0.0, 0.0]
    assert curve.success_rate == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("target", [None, "random"])
def test_per_sample_breaking_budgets_give_back_the_curve(model, data, target):
    x, y = data
    curve = robustness_curve(model, x, y, EPSILONS, target=target, steps=3)
    fooled_at = curve.per_sample["fooled_at"]
    assert curve.per_sample["index"] == list(range(len(x)))
    for eps, accuracy in zip(curve.epsilons, curve.accuracy, strict=True):
        robust = sum(1 for f in fooled_at if f is None or f > eps)
        assert robust / len(fooled_at) == accuracy
    reached = curve.per_sample["reached_at"]
    for eps, rate in zip(curve.epsilons, curve.success_rate, strict=True):
        assert sum(1 for r in reached if r is not None and r <= eps) / len(reached) == rate
    assert ("target" in curve.per_sample) == (target is not None)


class Exact(nn.Module):
    """A 2-class linear model `z = x @ W.T + b` written with elementwise products and sums,
    so each sample's logits and gradient are the same in any batch (float64)."""

    def __init__(self, d: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(2, d, generator=generator, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(2, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, None, :] * self.weight).sum(-1) + self.bias


def linear_problem(n: int = 200, d: int = 10) -> tuple[Exact, torch.Tensor, torch.Tensor]:
    model = Exact(d)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=generator)
    return model, x, y


@pytest.mark.parametrize("method", ["descend", "per-eps"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_breaking_budgets_of_a_linear_model_match_the_closed_form(norm, method):
    # Each sample breaks once eps exceeds margin / ||w_1 - w_0||_dual: the stored breaking
    # budget is the smallest grid eps at or above it, and the curve is the exact one.
    model, x, y = linear_problem()
    w = model.weight.detach()
    dual = (w[1] - w[0]).abs().sum() if norm == "linf" else (w[1] - w[0]).norm()
    with torch.no_grad():
        z = model(x)
    margin = (1 - 2 * y.double()) * (z[:, 0] - z[:, 1])
    budget = margin / dual  # <= 0 for clean errors
    grid = [float(e) for e in torch.linspace(0, float(budget.max()) * 1.2, 12)]
    away = (budget[:, None] - torch.tensor(grid)).abs().min(dim=1).values > 1e-6
    # L2 steps from a random start reach the sphere's best point only in the limit.
    options = {"clip": None, "steps": 10, "random_start": norm == "linf"}
    curve = robustness_curve(model, x, y, grid, norm=norm, method=method, batch_size=64, **options)
    grid_t = torch.tensor(grid, dtype=torch.float64)
    expected = [grid_t[grid_t >= b].min().item() if b <= grid[-1] else None for b in budget]
    found = curve.per_sample["fooled_at"]
    for i in away.nonzero().squeeze(1).tolist():
        assert found[i] == pytest.approx(expected[i]), i
    exact = [(budget > eps).double().mean().item() for eps in grid]
    assert curve.accuracy == pytest.approx(exact, abs=1.5 / len(x))  # a tie at a grid point
    assert curve.settings["method"] == method
    assert is_monotone(curve)


@pytest.mark.parametrize(
    "attack",
    # square (queries) and strong (a sequence of attacks) take seconds: in the full suite.
    ["pgd", "apgd", pytest.param("square", marks=pytest.mark.slow), "mifgsm"]
    + [pytest.param("strong", marks=pytest.mark.slow)],
)
def test_curve_and_per_sample_results_do_not_depend_on_batch_size_or_order(attack):
    model = Exact(8)
    n = 40
    x = torch.rand(n, 1, 2, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        model.bias.copy_(-model.weight.sum(1) / 2)  # the boundary crosses the box's centre
        y = model(x).argmax(1)
    y[:5] = 1 - y[:5]  # a few clean errors
    options = {
        "pgd": {"steps": 5, "restarts": 2},
        "apgd": {"steps": 5},
        "square": {"queries": 10},
        "mifgsm": {"steps": 5, "diversity": 0.8},
        "strong": {"steps": 5, "targeted_steps": 3, "queries": 10},
    }[attack]
    grid = [0, 0.02, 0.05, 0.1, 0.2, 0.3]
    curves = [
        robustness_curve(
            model, x, y, grid, attack=attack, target="random", batch_size=b, seed=3, examples=n,
            **options,
        )
        for b in (1, 7, 64)
    ]  # fmt: skip
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    shuffled = robustness_curve(
        model, x[order], y[order], grid, attack=attack, target="random", seed=3,
        sample_ids=order, **options,
    )  # fmt: skip
    first = curves[0]
    assert len(set(first.accuracy)) > 2
    for other in curves[1:]:
        assert (other.accuracy, other.success_rate) == (first.accuracy, first.success_rate)
        assert other.per_sample == first.per_sample
        assert torch.equal(other.examples["x_adv"], first.examples["x_adv"])
    # Shuffled: the same per-sample results, each under its own index.
    back = order.argsort().tolist()
    assert shuffled.per_sample["sample_id"] == order.tolist()
    for key in ("fooled_at", "reached_at", "target"):
        assert [shuffled.per_sample[key][j] for j in back] == first.per_sample[key], key
    assert shuffled.accuracy == first.accuracy


@pytest.mark.parametrize("target", ["random", None])
def test_a_part_of_the_data_with_its_sample_ids_gives_those_samples_results(model, data, target):
    # Random targets come from each sample's id: a part evaluated on its own (as one
    # process of several does) must see the same targets, also at eps 0.
    x, y = data
    whole = robustness_curve(model, x, y, EPSILONS, target=target, steps=3)
    ids = torch.arange(7, 19)
    part = robustness_curve(model, x[ids], y[ids], EPSILONS, target=target, steps=3, sample_ids=ids)
    for key in ("fooled_at", "reached_at", *(["target"] if target else [])):
        assert part.per_sample[key] == whole.per_sample[key][7:19], key


# --- bad data and bad arguments: a ValueError naming the argument, never a number --------


@pytest.mark.parametrize("epsilons", [[0.0], [0.0, 0.1]], ids=["eps-0-only", "eps-0-and-0.1"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_robustness_curve_refuses_bad_data(tiny_net, bad_data, attack, epsilons):
    x, y, options, message = bad_data
    with pytest.raises(ValueError, match=message):
        robustness_curve(tiny_net, x, y, epsilons, attack=attack, **options)


@pytest.mark.parametrize(
    "part, kw, message",
    [
        (slice(0, 0), {}, "N >= 1"),  # an empty data set
        (None, {"target": 0, "epsilons": [0.0]}, None),  # fine: some samples are left
        ("label-0", {"target": 0}, "leaves no sample"),
        (None, {"epsilons": [0.0, 1e30]}, "epsilons must be at most"),
        (None, {"step_size": 1e30}, "step_size must be at most"),
        (None, {"seed": 2**70}, "seed"),
        (None, {"target": 2**70}, "target"),
        (None, {"epsilons": [0.0], "clip": (1.0, 0.0)}, "clip"),
    ],
    ids=[
        "empty",
        "target-ok",
        "target-is-every-label",
        "huge-eps",
        "huge-step",
        "huge-seed",
        "huge-target",
        "bad-clip",
    ],
)
def test_robustness_curve_refuses_bad_arguments(tiny_net, tiny_data, part, kw, message):
    x, y = tiny_data
    if part == "label-0":
        x, y = x[y == 0], y[y == 0]
    elif part is not None:
        x, y = x[part], y[part]
    kw = {"epsilons": [0.0, 0.1], **kw}
    if message is None:
        assert robustness_curve(tiny_net, x, y, **kw).n_excluded == int((y == 0).sum())
        return
    with pytest.raises(ValueError, match=message):
        robustness_curve(tiny_net, x, y, **kw)


def test_descend_spends_fewer_passes_than_per_eps_and_is_as_strong(model, data):
    # One failed attack per sample (warm-started walks down the grid), against one per eps
    # below its breaking budget; what it finds is at least as strong at every eps.
    x, y = data
    grid = [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4]
    descend = robustness_curve(model, x, y, grid, steps=10, method="descend")
    per_eps = robustness_curve(model, x, y, grid, steps=10, method="per-eps")
    assert sum(descend.passes.values()) < 0.8 * sum(per_eps.passes.values())
    for a, b in zip(descend.accuracy, per_eps.accuracy, strict=True):
        assert a <= b + 2 / len(x)
    assert is_monotone(descend)
    # Each eps's checks count the samples attacked there and the passes spent on them.
    attacked = sum(c["attacked"] for c in descend.checks)
    assert len(x) // 2 < attacked <= (len(grid) - 1) * len(x)
    spent = sum(c["forward"] + c["backward"] for c in descend.checks)
    assert spent <= sum(descend.passes.values()) <= spent + 8 * len(x)  # clean pass, checks


def test_descend_shares_out_a_staged_attacks_log_per_eps(model, data):
    x, y = data
    curve = robustness_curve(
        model, x, y, EPSILONS, attack="strong", steps=4, targeted_steps=2, queries=0
    )
    for check in curve.checks[1:]:
        stages = check.get("stages", [])
        assert all(isinstance(v, int) for s in stages for k, v in s.items() if k != "stage")
        if check["attacked"]:  # every attacked sample goes through the first stage
            assert stages[0]["attacked"] == check["attacked"]


class NoEmptyBatch(nn.Module):
    """A model that refuses an empty batch (as JPEG-preprocessing defenses do)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            raise ValueError("empty batch")
        return self.inner(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_descend_never_calls_the_model_on_an_empty_batch(model, data, norm):
    x, y = data
    grid = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    curve = robustness_curve(NoEmptyBatch(model), x, y, grid, norm=norm, steps=5)
    assert is_monotone(curve)


@pytest.mark.parametrize("method", ["descend", "per-eps"])
def test_stored_examples_keep_the_clean_inputs(model, data, method):
    # The gallery shows examples["x"] as the clean image beside each adversarial one:
    # attacking must not write into it (per-eps used to overwrite it in place).
    x, y = data
    n = 8
    curve = robustness_curve(model, x, y, EPSILONS, steps=5, method=method, examples=n)
    assert curve.examples is not None
    assert torch.equal(curve.examples["x"], x[:n])
    moved = (curve.examples["x_adv"][:, -1] - x[:n]).flatten(1).abs().amax(1)
    assert (moved > 0).any()  # the attack did move them, so the check above could fail
    assert float(moved.max()) <= EPSILONS[-1] + 1e-6
