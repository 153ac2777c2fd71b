"""`models.layers`: the Normalize layer and the argument checks."""

import pytest
import torch

from models.layers import (
    Normalize,
    check_dropout,
    check_input_shape,
    check_int,
    check_int_list,
    count_parameters,
)


def test_normalize_subtracts_mean_and_divides_by_std_per_channel():
    layer = Normalize(3, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0])
    x = torch.rand(2, 3, 4, 5)
    expected = torch.stack(
        [(x[:, 0] - 0.1) / 0.5, (x[:, 1] - 0.2) / 0.25, (x[:, 2] - 0.3) / 2.0], dim=1
    )
    torch.testing.assert_close(layer(x), expected)


def test_normalize_defaults_to_identity():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(Normalize(1)(x), x)


def test_normalize_buffers_are_persistent_and_not_parameters():
    layer = Normalize(2, mean=[0.5, 0.5], std=[0.2, 0.3])
    assert set(layer.state_dict()) == {"mean", "std"}
    assert count_parameters(layer) == 0
    restored = Normalize(2)
    restored.load_state_dict(layer.state_dict())
    x = torch.rand(3, 2, 4, 4)
    assert torch.equal(restored(x), layer(x))


def test_normalize_follows_the_input_through_to():
    layer = Normalize(1, mean=[0.5], std=[0.5]).to(torch.float64)
    assert layer(torch.rand(1, 1, 2, 2, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.1, 0.2], None, "mean"),
        (None, [1.0, 1.0, 1.0, 1.0], "std"),
        (None, [1.0, 0.0, 1.0], "std"),
        (None, [1.0, -1.0, 1.0], "std"),
        ([0.0, float("inf"), 0.0], None, "mean"),
        ("0.5", None, "mean"),
    ],
)
def test_normalize_rejects_bad_statistics(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalize(3, mean=mean, std=std)


def test_checks_refuse_bools_and_accept_json_lists():
    with pytest.raises(ValueError, match="depth"):
        check_int("depth", True)
    assert check_int_list("hidden", [4, 2]) == (4, 2)
    assert check_input_shape([1, 8, 8]) == (1, 8, 8)
    assert check_dropout("dropout", 0) == 0.0
    with pytest.raises(ValueError, match="dropout"):
        check_dropout("dropout", "0.1")
