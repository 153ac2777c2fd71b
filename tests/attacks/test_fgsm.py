import pytest
import torch

import attacks


@pytest.mark.parametrize("loss", attacks.LOSSES)
@pytest.mark.parametrize("norm", attacks.NORMS)
def test_fgsm_on_a_linear_model_lowers_every_margin_by_the_dual_norm(linear_problem, norm, loss):
    p = linear_problem
    for eps in (0.05, 0.2, 0.5):
        x_adv = attacks.fgsm(p.model, p.x, p.y, eps, norm=norm, loss=loss, clip=None)
        drop = p.margin(p.x) - p.margin(x_adv)
        assert torch.allclose(drop, eps * p.dual_norm[norm].expand_as(drop), atol=1e-9)


@pytest.mark.parametrize("norm", attacks.NORMS)
def test_fgsm_reaches_the_closed_form_robust_accuracy(linear_problem, norm):
    p = linear_problem
    for eps in (0.1, 0.3, 1.0):
        x_adv = attacks.fgsm(p.model, p.x, p.y, eps, norm=norm, clip=None)
        accuracy = (p.margin(x_adv) > 0).double().mean().item()
        assert accuracy == p.robust_accuracy(eps, norm)
        assert accuracy < p.robust_accuracy(0.0, norm)


def test_targeted_fgsm_on_two_classes_equals_untargeted(linear_problem):
    p = linear_problem
    untargeted = attacks.fgsm(p.model, p.x, p.y, 0.3, clip=None)
    targeted = attacks.fgsm(p.model, p.x, p.y, 0.3, target=1 - p.y, clip=None)
    assert torch.equal(untargeted, targeted)


def test_fgsm_linf_moves_every_coordinate_by_eps_before_clipping(make_bn_model):
    model = make_bn_model()
    x = torch.full((5, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1, 2, 0, 1])
    x_adv = attacks.fgsm(model, x, y, 0.1)
    assert torch.allclose((x_adv - x).abs(), torch.full_like(x, 0.1))


def test_fgsm_clips_into_the_box():
    # Class 1's logit grows with every pixel, so the untargeted step on class 0 adds eps.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
    x = torch.tensor([[0.0, 1.0, 0.99, 0.01]]).view(1, 1, 2, 2)
    x_adv = attacks.fgsm(model, x, torch.tensor([0]), 0.5)
    assert torch.allclose(x_adv.flatten(), torch.tensor([0.5, 1.0, 1.0, 0.51]))
    no_clip = attacks.fgsm(model, x, torch.tensor([0]), 0.5, clip=None)
    assert torch.allclose(no_clip.flatten(), torch.tensor([0.5, 1.5, 1.49, 0.51]))


def test_fgsm_makes_one_forward_pass(bn_model, images, forward_counter):
    model = forward_counter(bn_model)
    attacks.fgsm(model, *images, 0.1)
    assert model.calls == 1


def test_fgsm_per_sample_eps_tensor(bn_model, images):
    x, y = images
    eps = torch.linspace(0, 0.3, len(x))
    x_adv = attacks.fgsm(bn_model, x, y, eps)
    reached = (x_adv - x).flatten(1).abs().amax(dim=1)
    assert (reached <= eps + 1e-6).all()
    assert reached[0] == 0
