"""`models.build` / `models.available` and the properties every model shares."""

import copy
import json

import pytest
import torch

import models

NAMES = ("attention", "bncnn", "mlp")
SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32))
# A non-default option per model, so the JSON round trip carries real settings.
OPTIONS = {
    "attention": {"dim": 32, "depth": 1, "heads": 4, "pos": "sinusoidal"},
    "bncnn": {"channels": [8, 16], "dropout": 0.1},
    "mlp": {"hidden": [32, 16], "dropout": 0.1},
}


def _build(name, shape=(1, 8, 8), seed=0, **options):
    torch.manual_seed(seed)
    return models.build(name, input_shape=shape, num_classes=10, **options)


def test_available_is_the_sorted_names():
    assert models.available() == NAMES


def test_public_api():
    assert set(models.__all__) >= {"build", "available", "MLP", "BNCNN", "AttentionClassifier"}
    assert models.MLP is type(_build("mlp"))
    assert models.BNCNN is type(_build("bncnn"))
    assert models.AttentionClassifier is type(_build("attention"))


def test_default_epochs_cover_every_model():
    assert set(models.DEFAULT_EPOCHS) == set(models.available())
    assert all(isinstance(n, int) and 1 <= n <= 100 for n in models.DEFAULT_EPOCHS.values())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_input_gradient(name, shape):
    net = _build(name, shape)
    x = torch.rand(3, *shape, requires_grad=True)
    logits = net(x)
    assert logits.shape == (3, 10)
    assert logits.dtype == torch.float32
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum() - logits[:, 0].sum(), x)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    net = _build(name)
    net(torch.rand(4, 1, 8, 8)).sum().backward()
    for param_name, p in net.named_parameters():
        assert p.grad is not None, param_name
        assert torch.isfinite(p.grad).all(), param_name


@pytest.mark.parametrize("name", NAMES)
def test_num_parameters_counts_trainable_scalars(name):
    net = _build(name)
    assert net.num_parameters() == sum(p.numel() for p in net.parameters())
    next(net.parameters()).requires_grad_(False)
    frozen = next(net.parameters()).numel()
    assert net.num_parameters() == sum(p.numel() for p in net.parameters()) - frozen


@pytest.mark.parametrize("name", NAMES)
def test_build_starts_in_training_mode(name):
    assert _build(name).training


@pytest.mark.parametrize("name", NAMES)
def test_normalize_buffers_are_saved(name):
    net = _build(name, (3, 32, 32), mean=[0.1, 0.2, 0.3], std=[0.5, 0.6, 0.7])
    state = net.state_dict()
    assert state["normalize.mean"].flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert state["normalize.std"].flatten().tolist() == pytest.approx([0.5, 0.6, 0.7])


@pytest.mark.parametrize("name", NAMES)
def test_model_equals_unnormalized_model_on_normalized_input(name):
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    net = _build(name, (3, 32, 32), mean=mean, std=std).eval()
    bare = copy.deepcopy(net)
    bare.normalize = torch.nn.Identity()
    x = torch.rand(4, 3, 32, 32)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), bare(normalized), rtol=1e-5, atol=1e-5)
        # ... and the normalization does change the output.
        assert not torch.allclose(net(x), bare(x), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_from_json_and_state_dict_gives_identical_outputs(name):
    spec = {
        "name": name,
        "input_shape": (1, 8, 8),
        "num_classes": 10,
        "options": {"mean": [0.3], "std": [0.4], **OPTIONS[name]},
    }
    torch.manual_seed(0)
    trained = models.build(
        spec["name"], spec["input_shape"], spec["num_classes"], **spec["options"]
    )
    with torch.no_grad():  # move batch-norm running statistics off their initial values
        trained(torch.rand(16, 1, 8, 8))
    saved = json.loads(json.dumps(spec))
    torch.manual_seed(1)
    rebuilt = models.build(
        saved["name"], saved["input_shape"], saved["num_classes"], **saved["options"]
    )
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.config == trained.config
    x = torch.rand(5, 1, 8, 8)
    trained.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trained(x))


@pytest.mark.parametrize("name", NAMES)
def test_batch_output_equals_single_outputs_in_eval_mode(name):
    net = _build(name, (1, 28, 28)).eval()
    with torch.no_grad():
        net.train()(torch.rand(8, 1, 28, 28))  # non-trivial BN statistics
        net.eval()
        x = torch.rand(6, 1, 28, 28)
        batch = net(x)
        singles = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_is_deterministic(name):
    net = _build(name, dropout=0.5).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="resnet") as info:
        models.build("resnet", input_shape=(1, 8, 8), num_classes=10)
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_named(name):
    with pytest.raises(ValueError, match="colour"):
        models.build(name, input_shape=(1, 8, 8), num_classes=10, colour="red")


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("mlp", {"channels": [8]}, "channels"),  # another model's option
        ("bncnn", {"hidden": [8]}, "hidden"),
        ("mlp", {"hidden": [0]}, "hidden"),
        ("mlp", {"hidden": 64}, "hidden"),
        ("mlp", {"hidden": [True]}, "hidden"),
        ("mlp", {"dropout": 1.0}, "dropout"),
        ("bncnn", {"dropout": -0.1}, "dropout"),
        ("bncnn", {"channels": []}, "channels"),
        ("bncnn", {"channels": [8, "16"]}, "channels"),
        ("attention", {"dim": 30, "heads": 4}, "divisible by heads"),
        ("attention", {"dim": 0}, "dim"),
        ("attention", {"depth": -1}, "depth"),
        ("attention", {"heads": 2.0}, "heads"),
        ("attention", {"mlp_ratio": 0}, "mlp_ratio"),
        ("attention", {"patch_size": 3}, "patch_size"),
        ("attention", {"pos": "rotary"}, "pos"),
        ("attention", {"dim": 9, "heads": 1, "pos": "sinusoidal"}, "even"),
        ("mlp", {"mean": [0.1, 0.2]}, "mean"),
        ("bncnn", {"mean": 0.5}, "mean"),
        ("attention", {"std": [0.0]}, "std"),
        ("mlp", {"std": [float("nan")]}, "std"),
    ],
)
def test_bad_option_values_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        models.build(name, input_shape=(1, 8, 8), num_classes=10, **options)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("input_shape", "num_classes", "match"),
    [
        ((8, 8), 10, "input_shape"),
        ((1, 0, 8), 10, "input_shape"),
        ("1x8x8", 10, "input_shape"),
        ((1, 8, 8), 1, "num_classes"),
        ((1, 8, 8), 10.0, "num_classes"),
    ],
)
def test_bad_shape_or_classes_raise(name, input_shape, num_classes, match):
    with pytest.raises(ValueError, match=match):
        models.build(name, input_shape=input_shape, num_classes=num_classes)
