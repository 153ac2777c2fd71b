"""`models.AttentionClassifier` and its parts, checked against PyTorch's fused kernel."""

import pytest
import torch
import torch.nn.functional as F

from models import AttentionClassifier
from models.attention import (
    Attention,
    Block,
    LearnedPositionalEmbedding,
    PatchEmbed,
    SinusoidalPositionalEmbedding,
    attention,
    default_patch_size,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 4, 16, 8), (1, 1, 49, 16), (3, 8, 5, 4)])
def test_explicit_attention_equals_torch_sdpa(shape, dtype):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator, dtype=dtype) * 3 for _ in range(3))
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_attention_module_equals_sdpa_on_its_own_projections():
    torch.manual_seed(0)
    module = Attention(dim=32, heads=4).eval()
    x = torch.randn(3, 10, 32)
    # (N, T, 3 * D) -> (N, T, 3, heads, head_dim) -> (3, N, heads, T, head_dim)
    q, k, v = module.qkv(x).reshape(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    fused = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, head_dim)
    expected = module.proj(fused.transpose(1, 2).reshape(3, 10, 32))
    torch.testing.assert_close(module(x), expected)


def test_attention_gradients_match_sdpa():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 6, 4, generator=generator, requires_grad=True) for _ in range(3))
    ours = torch.autograd.grad(attention(q, k, v).square().sum(), (q, k, v))
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v).square().sum(), (q, k, v))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_attention_dropout_acts_on_the_weights_in_training_only():
    torch.manual_seed(0)
    module = Attention(dim=16, heads=2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    assert not torch.equal(module(x), module(x))
    module.eval()
    assert torch.equal(module(x), module(x))


def test_block_is_two_pre_norm_residuals():
    torch.manual_seed(0)
    block = Block(dim=16, heads=2, mlp_ratio=4.0).eval()
    assert block.mlp.fc1.out_features == 64
    x = torch.randn(2, 5, 16)
    h = x + block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.norm2(h)))


@pytest.mark.parametrize(
    ("shape", "patch", "tokens"),
    [
        ((1, 8, 8), 2, 16),
        ((1, 28, 28), 4, 49),
        ((3, 32, 32), 4, 64),
        ((1, 30, 30), 3, 100),
        ((1, 7, 7), 1, 49),
    ],
)
def test_default_patch_size_and_token_count(shape, patch, tokens):
    assert default_patch_size(shape[1], shape[2]) == patch
    net = AttentionClassifier(shape, 10, dim=16, heads=2, depth=1)
    assert net.config.patch_size == patch
    assert net.patch_embed(torch.rand(2, *shape)).shape == (2, tokens, 16)


def test_patch_embedding_is_a_linear_map_of_each_patch():
    torch.manual_seed(0)
    embed = PatchEmbed(in_channels=2, dim=8, patch_size=2)
    x = torch.rand(1, 2, 4, 6)
    tokens = embed(x)  # (1, 6, 8), row-major over the 2x3 patch grid
    weight = embed.proj.weight.reshape(8, -1)  # (D, C * P * P)
    patch = x[0, :, 2:4, 4:6].reshape(-1)  # row 1, column 2 -> token 5
    torch.testing.assert_close(tokens[0, 5], weight @ patch + embed.proj.bias)


def test_patch_size_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="patch_size must divide"):
        AttentionClassifier((1, 28, 28), 10, patch_size=3)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_both_positional_encodings_train(pos):
    torch.manual_seed(0)
    net = AttentionClassifier((1, 8, 8), 10, dim=32, heads=4, depth=1, pos=pos)
    x = torch.rand(4, 1, 8, 8)
    logits = net(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_positional_encodings_differ_in_what_is_trained():
    learned = AttentionClassifier((1, 8, 8), 10, pos="learned")
    fixed = AttentionClassifier((1, 8, 8), 10, pos="sinusoidal")
    assert isinstance(learned.pos_embed, LearnedPositionalEmbedding)
    assert isinstance(fixed.pos_embed, SinusoidalPositionalEmbedding)
    assert learned.num_parameters() - fixed.num_parameters() == 16 * 64
    assert "pos_embed.pos" in fixed.state_dict()  # a buffer, saved with the weights


def test_positions_break_permutation_symmetry():
    torch.manual_seed(0)
    net = AttentionClassifier((1, 8, 8), 10, dim=16, heads=2, depth=1).eval()
    x = torch.rand(1, 1, 8, 8)
    shuffled = x[..., torch.tensor([2, 3, 0, 1, 4, 5, 6, 7]), :]  # swap two patch rows
    with torch.no_grad():
        assert not torch.allclose(net(x), net(shuffled))
        net.pos_embed = torch.nn.Identity()  # without positions: a bag of patches
        torch.testing.assert_close(net(x), net(shuffled))


def test_sinusoidal_table_is_the_transformer_formula():
    table = SinusoidalPositionalEmbedding(tokens=6, dim=8).pos[0]  # (T, D) = (6, 8)
    t = torch.arange(6.0)
    for i in range(4):
        w = 10000.0 ** (-2 * i / 8)
        torch.testing.assert_close(table[:, 2 * i], (t * w).sin())
        torch.testing.assert_close(table[:, 2 * i + 1], (t * w).cos())
    assert len({tuple(row.tolist()) for row in table}) == 6  # every position distinct


def test_depth_zero_is_patch_embedding_and_head():
    net = AttentionClassifier((1, 8, 8), 10, depth=0)
    assert len(net.blocks) == 0
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
