"""`models.MLP`: a multilayer perceptron on flattened pixels."""

import pytest
import torch

from models import MLP
from models.mlp import MLPConfig


def test_default_layer_sizes_on_digits():
    net = MLP((1, 8, 8), 10)
    assert net.config == MLPConfig(input_shape=(1, 8, 8), num_classes=10)
    widths = [
        (m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert widths == [(64, 512), (512, 256), (256, 10)]
    assert net.num_parameters() == 64 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10


def test_no_hidden_layers_is_softmax_regression():
    net = MLP((3, 4, 4), 5, hidden=[])
    assert net.num_parameters() == 3 * 4 * 4 * 5 + 5
    assert net(torch.rand(2, 3, 4, 4)).shape == (2, 5)


def test_config_stores_json_lists_as_tuples():
    net = MLP([1, 8, 8], 10, hidden=[16], mean=[0.5], std=[0.25])
    assert net.config.input_shape == (1, 8, 8)
    assert net.config.hidden == (16,)
    assert net.config.mean == (0.5,)
    assert net.config.std == (0.25,)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    net = MLP((1, 8, 8), 10, dropout=0.5)
    x = torch.rand(4, 1, 8, 8)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        MLP((1, 8, 8), 10, [32])
