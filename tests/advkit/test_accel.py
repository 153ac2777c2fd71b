"""`advkit.accel`: autocast forwards keep the attack's float32 arithmetic and its budget."""

import pytest
import torch

import attacks
import models
from advkit.accel import accelerate, amp_dtype, autocast, describe


def cnn():
    torch.manual_seed(0)
    return models.build("bncnn", input_shape=(1, 8, 8), num_classes=10).eval()


def test_bf16_autocast_attack_keeps_float32_and_the_budget():
    model, x = cnn(), torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    fast = accelerate(model, device="cpu", amp="bf16", channels_last=True)
    logits = fast(x)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, model(x), atol=0.1)  # bf16 keeps ~3 digits
    g = torch.Generator().manual_seed(0)
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        x_adv = attacks.pgd(fast, x, y, eps, norm=norm, steps=5, generator=g)
        assert x_adv.dtype == torch.float32
        size = attacks.norms.norm_of((x_adv - x).double(), norm)
        assert (
            float(size.max()) <= eps + 1e-6 and 0 <= float(x_adv.min()) <= float(x_adv.max()) <= 1
        )


def test_without_options_the_model_is_returned_as_is():
    model = cnn()
    assert accelerate(model, device="cpu") is model
    assert (
        describe() == "" and describe(amp="fp16", channels_last=True) == "amp fp16, channels_last"
    )


def test_autocast_context_and_bad_amp():
    with autocast("cpu", "bf16"):
        assert (
            torch.nn.functional.linear(torch.rand(2, 3), torch.rand(4, 3)).dtype == torch.bfloat16
        )
    with autocast("cpu", None):
        assert torch.nn.functional.linear(torch.rand(2, 3), torch.rand(4, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="amp"):
        amp_dtype("fp8")
