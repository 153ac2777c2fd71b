"""The report's figures: PNG files, one colour per model, the attack figure."""

import math

import torch
from PIL import Image

from advkit import report, runs


def test_figures_are_png_at_120_dpi_or_more(built):
    out, result, _ = built
    for path in result["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min(image.info["dpi"]) >= 119.99, path
            assert min(image.size) >= 400, path
            image.verify()


def test_five_optimizers_have_five_distinct_line_styles_and_markers():
    names = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
    styles = [report.optimizer_style(n) for n in names]
    assert len({str(s["linestyle"]) for s in styles}) == 5
    assert len({s["marker"] for s in styles}) == 5


def test_figures_colour_by_model_name_each_model_once_and_heatmaps_have_a_colour_bar(run_root):
    from advkit.report.combine import CellKey
    from advkit.report.groups import group_runs

    loaded = [report.load_report_run(p) for p in report.find_runs([run_root])]
    groups = group_runs(loaded)
    chosen = report.choose_eps(loaded, {"linf": None, "l2": None})
    key = CellKey("linf", None)
    curves = report.robustness_figure("digits", key, groups, chosen["linf"])
    drawn = {
        str(line.get_color())
        for line in curves.axes[0].get_lines()
        if line.get_marker() not in (None, "None", "")
    }
    assert drawn == {report.MODEL_COLORS["mlp"], report.MODEL_COLORS["bncnn"]}
    labels = [t.get_text() for legend in curves.legends for t in legend.get_texts()]
    assert sorted(labels) == sorted(["model mlp", "model bncnn", "optimizer sgd", "optimizer adam"])
    heat = report.comparison_figure("digits", key, groups, chosen["linf"])
    assert len(heat.axes) == 2  # the heatmap and its colour bar
    assert "digits" in heat.axes[0].get_title()
    training = report.training_figure("digits", "mlp", [g for g in groups if g.model == "mlp"])
    assert all(ax.get_yscale() == "log" for ax in training.axes[:2])


def test_attack_figure_draws_curve_and_gallery_grey_and_rgb(run_root, tmp_path):
    path = next((run_root / "mlp-adam" / "attacks").glob("pgd-linf-target-random-????????.json"))
    record = runs.read_json(path)
    examples = runs.read_safetensors(path.with_name(record["examples"]["file"]))
    fig = report.attack_figure(record, examples)
    assert len(fig.axes) == 2  # the curve; the gallery in one Axes of image artists
    assert len(fig.axes[1].get_images()) == 3 * len(examples["y"])
    text = " ".join(t.get_text() for t in fig.axes[1].texts)
    assert "target" in text and "perturbation" in text and "grey = 0" in text
    assert "ε (L∞" in fig.axes[0].get_xlabel()
    assert "PGD L∞ targeted (random), 3 steps" in fig.axes[0].get_title()
    report.save_figure(fig, tmp_path / "attack.png")
    # RGB images and no examples at all.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=g)
    rgb = {
        "x": x,
        "x_adv": (x + 0.03).clamp(0, 1),
        "y": torch.tensor([0, 1, 2, 3]),
        "target": torch.full((4,), -1),
        "pred_clean": torch.tensor([0, 1, 2, 3]),
        "pred_adv": torch.tensor([1, 1, 0, 0]),
        "conf_clean": torch.full((4,), 0.9),
        "conf_adv": torch.full((4,), 0.6),
    }
    rgb_record = {**record, "dataset": "cifar10"}
    fig = report.attack_figure(rgb_record, rgb)
    assert fig.axes[1].get_images()[0].get_array().shape == (6, 6, 3)
    assert "airplane" in " ".join(t.get_text() for t in fig.axes[1].texts)
    report.save_figure(fig, tmp_path / "rgb.png")
    report.save_figure(report.attack_figure(record, None), tmp_path / "curve.png")
    for name in ("attack.png", "rgb.png", "curve.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and math.isclose(image.info["dpi"][0], 130, abs_tol=0.01)
