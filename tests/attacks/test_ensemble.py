"""attacks.Ensemble: the weighted mean of its members, which it leaves untouched."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attacks


def members(make_bn_model):
    """Three BN-CNNs in train mode (one submodule each in eval), with stale grads on one."""
    models = [make_bn_model(4, seed=seed) for seed in range(3)]
    for p in models[1].parameters():
        p.grad = torch.ones_like(p)
    return models


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    copy = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        out = model(x)
    for m, flag in zip(model.modules(), copy, strict=True):
        m.training = flag
    return out


def test_the_ensemble_is_the_mean_of_its_members_eval_logits(make_bn_model, images, untouched):
    x, _ = images
    models = members(make_bn_model)
    ensemble = attacks.Ensemble(models)
    expected = torch.stack([eval_logits(m, x) for m in models]).mean(dim=0)
    with untouched(models[0]), untouched(models[1]), untouched(models[2]):
        out = ensemble(x)
        again = ensemble(x)  # dropout would make two train-mode passes differ
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out, again)


def test_weights_and_log_softmax(make_bn_model, images):
    x, _ = images
    models = members(make_bn_model)[:2]
    weighted = attacks.Ensemble(models, weights=[3, 1], average="log_softmax")
    logs = [F.log_softmax(eval_logits(m, x), dim=1) for m in models]
    with torch.no_grad():
        assert torch.allclose(weighted(x), 0.75 * logs[0] + 0.25 * logs[1], atol=1e-6)
    only_first = attacks.Ensemble(models, weights=[1.0, 0.0])
    with torch.no_grad():
        assert torch.allclose(only_first(x), eval_logits(models[0], x), atol=1e-6)


def test_train_and_eval_on_the_ensemble_leave_the_members_flags(make_bn_model, untouched):
    models = members(make_bn_model)
    ensemble = attacks.Ensemble(models)
    with untouched(models[0]), untouched(models[1]), untouched(models[2]):
        ensemble.eval()
        assert not ensemble.training
        ensemble.train()
        assert ensemble.training


def test_attacking_an_ensemble_leaves_every_member_untouched(make_bn_model, images, untouched):
    x, y = images
    models = members(make_bn_model)
    ensemble = attacks.Ensemble(models)
    flag = ensemble.training
    with untouched(models[0]), untouched(models[1]), untouched(models[2]):
        for attack in (attacks.fgsm, attacks.pgd, attacks.mifgsm):
            x_adv = attack(ensemble, x, y, 0.3)
            assert not torch.equal(x_adv, x)
        attacks.mifgsm(ensemble, x, y, 0.3, diversity=0.5, translation=3)
    assert ensemble.training == flag


def test_an_attack_on_the_ensemble_lowers_its_accuracy(make_bn_model):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=generator)
    models = members(make_bn_model)
    ensemble = attacks.Ensemble(models)
    with torch.no_grad():
        y = ensemble(x).argmax(dim=1)  # every sample correct at first
        x_adv = attacks.mifgsm(ensemble, x, y, 1.0)  # random models need a large budget
        fooled = (ensemble(x_adv).argmax(dim=1) != y).double().mean().item()
    assert fooled > 0.5


def test_members_with_other_outputs_are_unwrapped():
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.linear(x)}

    wrapped = Wrapped()
    plain = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with torch.no_grad():
        expected = (wrapped.linear(x) + plain(x)) / 2
        assert torch.allclose(attacks.Ensemble([wrapped, plain])(x), expected)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"models": []}, "models"),
        ({"models": nn.Linear(4, 3)}, "models"),
        ({"models": [nn.Linear(4, 3), "net"]}, "models"),
        ({"models": [nn.Linear(4, 3)], "average": "softmax"}, "average"),
        ({"models": [nn.Linear(4, 3)], "weights": [1.0, 1.0]}, "weights"),
        ({"models": [nn.Linear(4, 3)] * 2, "weights": [1.0, -1.0]}, "weights"),
        ({"models": [nn.Linear(4, 3)] * 2, "weights": [0, 0]}, "weights"),
        ({"models": [nn.Linear(4, 3)] * 2, "weights": [1.0, float("nan")]}, "weights"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(arguments, match):
    with pytest.raises(ValueError, match=match):
        attacks.Ensemble(**arguments)


def test_members_disagreeing_on_the_classes_are_refused():
    ensemble = attacks.Ensemble([nn.Linear(4, 3), nn.Linear(4, 5)])
    with pytest.raises(ValueError, match="models"):
        ensemble(torch.rand(2, 4))
