"""The report's figures: PNG files, one colour per model, the attack figure."""

import math

import torch
from matplotlib.figure import Figure
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


def test_the_same_model_has_the_same_colour_in_two_figures(run_root):
    loaded = [report.load_report_run(p) for p in report.find_runs([run_root])]
    mlp_runs = [r for r in loaded if r.model == "mlp"]
    training = report.training_figure("mlp", mlp_runs)
    entries = [
        (r, rec) for r in loaded for rec in r.records if rec.setting.slug == "pgd-linf-untargeted"
    ]
    curves = report.robustness_figure(entries[0][1].setting, entries, None)

    def colours(fig: Figure, label_has: str | None = None) -> set[str]:
        lines = [line for ax in fig.axes for line in ax.get_lines()]
        if label_has:
            lines = [line for line in lines if label_has in line.get_label()]
        return {str(line.get_color()) for line in lines if line.get_linestyle() != "None"}

    assert colours(training) == {report.MODEL_COLORS["mlp"]}
    assert colours(curves, "mlp-") == {report.MODEL_COLORS["mlp"]}
    assert colours(curves, "bncnn-") == {report.MODEL_COLORS["bncnn"]}


def test_comparison_figure_writes_the_strongest_attacks_numbers(run_root):
    loaded = [report.load_report_run(p) for p in report.find_runs([run_root])]
    chosen = report.choose_eps(loaded, {"linf": None, "l2": None})
    fig = report.comparison_figure(loaded, chosen)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    for run in loaded:
        for norm, choice in chosen.items():
            rec = report.strongest_record(run, norm, choice.eps)
            if rec is None:
                continue
            value, interp = report.value_at(rec.curve, choice.eps)
            assert any(t.startswith(("≈" if interp else "") + report.fmt(value)) for t in texts)


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
