"""advkit.transfer and advkit.images: 8-bit rounding inside the budget, PNG files, the matrix."""

import json

import pytest
import torch

import attacks
import models
from advkit import images
from advkit.train import TrainConfig, train
from advkit.transfer import (
    TransferSettings,
    evaluate_images,
    read_record,
    transfer,
    transfer_runs,
    write_record,
)


def test_rounding_never_leaves_the_budget_and_moves_toward_the_clean_pixel():
    # Clean pixels off the 8-bit grid (as the 17-level digits are): nearest-level
    # rounding would cross the budget for some of them.
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=generator)
    eps = 4 / 255
    x_adv = (x + eps * torch.sign(torch.randn(x.shape, generator=generator))).clamp(0, 1)
    nearest = torch.round(x_adv.double() * 255) / 255
    assert (nearest - x.double()).abs().max() > eps + 1e-6  # the case that matters
    levels = images.to_levels(x_adv, x, eps)
    assert levels.dtype == torch.uint8
    rounded = images.from_levels(levels)
    assert images.linf_distance(rounded, x).max() <= eps + 1e-6
    # Where the nearest level was inside the budget, it is kept.
    inside = (nearest - x.double()).abs() <= eps
    assert torch.equal(levels[inside].double(), (nearest * 255)[inside])
    # Elsewhere the level is the nearest one inside: one step toward x crosses nothing new.
    assert (levels.double() / 255 - x_adv.double()).abs().max() <= 1 / 255 + 1e-9


def test_rounding_keeps_clean_images_on_the_grid_and_a_budget_of_exact_levels():
    clean = torch.randint(0, 256, (8, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    x = clean.float() / 255
    sign = torch.tensor([1, -1]).repeat(192).view(x.shape)
    x_adv = (x + 8 / 255 * sign).clamp(0, 1)
    levels = images.to_levels(x_adv, x, 8 / 255)
    # The budget is exactly 8 levels: float error must not cost (or add) a level.
    assert torch.equal(levels.long(), (clean + 8 * sign).clamp(0, 255))
    assert torch.equal(images.to_levels(x, x, 0.0), clean.to(torch.uint8))


def test_a_budget_below_half_a_level_keeps_the_clean_pixels_own_rounding():
    x = torch.tensor([0.3 / 255, 100.6 / 255, 7 / 255]).view(1, 1, 1, 3)
    x_adv = (x + 0.2 / 255).clamp(0, 1)
    levels = images.to_levels(x_adv, x, 0.2 / 255)
    assert levels.flatten().tolist() == [0, 101, 7]
    assert images.check_budget(images.from_levels(levels), x, 0.2 / 255) > 0.2 / 255
    with pytest.raises(ValueError, match="over eps"):
        images.check_budget(torch.full_like(x, 8 / 255), x, 0.2 / 255)


def test_png_files_round_trip_in_the_homework_layout(tmp_path):
    levels = torch.randint(0, 256, (5, 3, 6, 7), generator=torch.Generator().manual_seed(2))
    levels = levels.to(torch.uint8)
    y = torch.tensor([3, 0, 3, 9, 1])
    indices = torch.tensor([12, 4, 7, 30, 0])
    names = images.class_names("cifar10", 10)
    paths = images.write_images(tmp_path, levels, y, indices, names)
    assert paths[0] == tmp_path / "cat" / "cat12.png" and paths[3].name == "truck30.png"
    back, labels, read = images.read_images(tmp_path, names)
    order = torch.argsort(indices)
    assert torch.equal(back, levels[order]) and torch.equal(labels, y[order])
    assert torch.equal(read, indices[order])
    grey = levels[:, :1].contiguous()
    images.write_images(tmp_path / "grey", grey, y, indices, images.class_names("digits", 10))
    assert images.read_images(tmp_path / "grey", images.class_names("digits", 10))[0].shape[1] == 1


def test_files_outside_the_layout_are_named(tmp_path):
    names = images.class_names("digits", 10)
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "4x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="3/4x.png does not fit the layout"):
        images.read_images(tmp_path, names)
    with pytest.raises(ValueError, match="does not exist"):
        images.read_images(tmp_path / "nowhere", names)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, small_digits):
    """mlp and bncnn trained one epoch on small_digits, and an mlp of another seed."""
    root = tmp_path_factory.mktemp("transfer-runs")
    for name, config in {
        "mlp": TrainConfig(model="mlp", epochs=1),
        "bncnn": TrainConfig(model="bncnn", epochs=1),
        "mlp2": TrainConfig(model="mlp", epochs=1, seed=1),
    }.items():
        train(config, root / name, dataset=small_digits)
    return root


def test_matrix_of_an_ensemble_and_a_single_source(tiny_runs, small_digits):
    settings = TransferSettings.make(epsilons=[0.0, 0.2], limit=48, steps=3)
    record = transfer_runs(
        [[tiny_runs / "mlp", tiny_runs / "bncnn"], [tiny_runs / "bncnn"]],
        [tiny_runs / "mlp2", tiny_runs / "mlp"],
        settings,
        data=small_digits,
    )
    assert record.sources == ["mlp + bncnn", "bncnn"] and record.victims == ["mlp2", "mlp"]
    assert record.n_samples == 48 and set(record.runs) == {"mlp", "bncnn", "mlp2"}
    accuracy, clean = record.accuracy, record.clean_accuracy
    assert len(accuracy) == 2 and all(len(grid) == 2 and len(grid[0]) == 2 for grid in accuracy)
    for grid in record.max_linf:
        assert all(d <= 0.2 + 1e-6 for d in grid)
    # At eps=0 the images are the clean ones rounded to 8 bits: nearly the clean accuracy.
    assert all(abs(a - c) <= 3 / 48 for a, c in zip(accuracy[0][0], clean, strict=True))
    # White-box: the ensemble's own member mlp is fooled far more than at eps=0.
    assert accuracy[1][0][1] < clean[1] - 0.3
    for grid, intervals in zip(record.accuracy, record.intervals, strict=True):
        for row, row_intervals in zip(grid, intervals, strict=True):
            assert all(lo <= a <= hi for a, (lo, hi) in zip(row, row_intervals, strict=True))
    # The ensemble is what the attack ran on: its own accuracy is low.
    assert record.source_correct[1][0] / 48 < 0.3


def test_record_round_trips_through_json_with_its_figure(tiny_runs, small_digits, tmp_path):
    settings = TransferSettings.make(attack="fgsm", epsilons=[0.1], limit=16)
    record = transfer_runs(
        [[tiny_runs / "mlp"]], [tiny_runs / "bncnn"], settings, data=small_digits
    )
    path = tmp_path / "out" / f"{record.name}.json"
    figure = write_record(record, path)
    assert figure == path.with_suffix(".png") and figure.stat().st_size > 1000
    data = json.loads(path.read_text())
    assert data["settings"]["epsilons"] == [0.1] and data["accuracy"] == record.accuracy
    assert data["name"].startswith("transfer-fgsm-")
    again = read_record(path)
    assert again.accuracy == record.accuracy and again.name == record.name


def test_saved_images_are_what_the_victims_see(tiny_runs, small_digits, tmp_path):
    settings = TransferSettings.make(epsilons=[0.15], limit=40, steps=3, diversity=0.5)
    sources, victims = [[tiny_runs / "mlp"]], [tiny_runs / "bncnn", tiny_runs / "mlp2"]
    saved = transfer_runs(
        sources, victims, settings, data=small_digits, save_images=tmp_path / "png"
    )
    memory = transfer_runs(sources, victims, settings, data=small_digits)
    assert saved.correct == memory.correct and saved.images == str(tmp_path / "png")
    assert len(list((tmp_path / "png").rglob("*.png"))) == 40
    # Rounding to 8 bits moves each victim by a few samples at most.
    for a, b in zip(saved.correct[0][0], saved.correct_float[0][0], strict=True):
        assert abs(a - b) <= 4
    check = TransferSettings.make(attack=None, epsilons=[0.15])
    read = evaluate_images(tmp_path / "png", victims, check, data=small_digits)
    assert read.correct == saved.correct and read.clean_correct == saved.clean_correct
    with pytest.raises(ValueError, match="over eps"):
        evaluate_images(
            tmp_path / "png", victims, TransferSettings.make(attack=None, epsilons=[0.05]),
            data=small_digits,
        )  # fmt: skip


def test_an_ensemble_source_leaves_its_members_untouched(small_digits):
    torch.manual_seed(0)
    members = [models.build(n, input_shape=(1, 8, 8), num_classes=10) for n in ("mlp", "bncnn")]
    members[0].eval()
    flags = [m.training for m in members]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in members]
    x, y = small_digits.x_test[:16], small_digits.y_test[:16]
    settings = TransferSettings.make(epsilons=[0.2], steps=2)
    record = transfer({"both": attacks.Ensemble(members)}, {"mlp": members[0]}, x, y, settings)
    assert record.n_samples == 16 and [m.training for m in members] == flags == [False, True]
    for m, state in zip(members, before, strict=True):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="epsilons"):
        TransferSettings.make(epsilons=[0.1, float("nan")])
    with pytest.raises(ValueError, match="restarts"):
        TransferSettings.make(attack="mifgsm", epsilons=[0.1], restarts=2)
    with pytest.raises(ValueError, match="save_images needs exactly one"):
        x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
        model = models.build("mlp", input_shape=(1, 8, 8), num_classes=10)
        transfer(
            {"a": model}, {"b": model}, x, y, TransferSettings.make(epsilons=[0.1, 0.2]),
            save_images="somewhere",
        )  # fmt: skip
