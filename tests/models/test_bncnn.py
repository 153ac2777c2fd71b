"""`models.BNCNN`: conv -> batch norm -> ReLU blocks that adapt to the input size."""

import pytest
import torch

from models import BNCNN
from models.bncnn import ConvBlock


def _pools(net):
    return sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


@pytest.mark.parametrize(
    ("shape", "pools"), [((1, 8, 8), 1), ((1, 28, 28), 2), ((3, 32, 32), 3), ((1, 4, 4), 0)]
)
def test_pooling_stops_before_the_map_gets_too_small(shape, pools):
    net = BNCNN(shape, 10)
    assert _pools(net) == pools
    assert net(torch.rand(2, *shape)).shape == (2, 10)


def test_block_order_is_conv_bn_relu_pool():
    block = ConvBlock(1, 4, pool=True)
    assert [type(m) for m in block.children()] == [
        torch.nn.Conv2d,
        torch.nn.BatchNorm2d,
        torch.nn.ReLU,
        torch.nn.MaxPool2d,
    ]
    assert block.conv.bias is None  # the batch norm's shift replaces it
    assert isinstance(ConvBlock(1, 4, pool=False).pool, torch.nn.Identity)
    assert block(torch.rand(2, 1, 8, 8)).shape == (2, 4, 4, 4)


def test_channels_option_sets_the_blocks():
    net = BNCNN((1, 8, 8), 10, channels=[8])
    assert len(net.blocks) == 1
    assert net.head.in_features == 8
    assert net.num_parameters() == 9 * 8 + 2 * 8 + 8 * 10 + 10


def test_training_updates_running_statistics_and_eval_uses_them():
    torch.manual_seed(0)
    net = BNCNN((1, 8, 8), 10, channels=[4, 8])
    before = net.blocks[0].bn.running_mean.clone()
    x = torch.rand(16, 1, 8, 8)
    net(x)
    assert not torch.equal(net.blocks[0].bn.running_mean, before)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x[:1]), net(x)[:1])
    assert "blocks.0.bn.running_var" in net.state_dict()
