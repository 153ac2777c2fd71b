"""The report library on real runs: tiny trained models, real attack records."""

import csv
import html.parser
import math
import re
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from advkit import report, runs
from advkit.attack_runs import attack_run
from advkit.records import AttackSettings
from advkit.train import TrainConfig, train

LINF = [0.0, 0.1, 0.2]
L2 = [0.0, 0.5, 1.0]


def attack(run_dir, data, *, norm="linf", epsilons=LINF, **kw):
    if kw.get("attack", "pgd") == "pgd":
        kw.setdefault("steps", 3)
    settings = AttackSettings.make(norm=norm, epsilons=epsilons, limit=48, **kw)
    return attack_run(run_dir, settings, data=data, n_examples=6, figure=False)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, small_digits):
    """Three attacked runs (2 models x 2 optimizers), one unfinished run without attacks."""
    root = tmp_path_factory.mktemp("runs")
    for model, optimizer in [("mlp", "adam"), ("mlp", "sgd"), ("bncnn", "adam")]:
        out = root / f"{model}-{optimizer}"
        train(TrainConfig(model=model, optimizer=optimizer, epochs=2), out, dataset=small_digits)
        attack(out, small_digits)
        attack(out, small_digits, norm="l2", epsilons=L2)
    attack(root / "mlp-adam", small_digits, target="random")
    attack(root / "bncnn-adam", small_digits, attack="fgsm", epsilons=[0.0, 0.05, 0.15])
    unfinished = root / "mlp-momentum"
    train(
        TrainConfig(model="mlp", optimizer="momentum", epochs=2, warmup_epochs=1),
        unfinished,
        dataset=small_digits,
    )
    (unfinished / runs.SUMMARY).unlink()
    return root


@pytest.fixture(scope="module")
def built(run_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    calls = []
    result = report.build_report(
        [run_root], out, progress=lambda done, total, file: calls.append((done, total, file))
    )
    return out, result, calls


def records(run_root):
    return {p: runs.read_json(p) for p in sorted(run_root.glob("*/attacks/*.json"))}


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_every_expected_file_is_written(built, run_root):
    out, result, calls = built
    names = {p.name for p in (out / "figures").iterdir()}
    expected = {
        "comparison.png",
        "curves-pgd-linf-untargeted.png",
        "curves-pgd-l2-untargeted.png",
        "curves-pgd-linf-target-random.png",
        "curves-fgsm-linf-untargeted.png",
        "training-mlp.png",
        "training-bncnn.png",
    }
    # Galleries: per model, its most accurate run; per norm and target, PGD over FGSM.
    accuracy = {
        name: runs.read_json(run_root / name / "summary.json")["test_accuracy"]
        for name in ("mlp-adam", "mlp-sgd")
    }
    mlp = max(accuracy, key=lambda name: (accuracy[name], name))
    mlp_attacks = ["pgd-linf-untargeted", "pgd-l2-untargeted"]
    if mlp == "mlp-adam":
        mlp_attacks.append("pgd-linf-target-random")
    expected |= {f"gallery-{mlp}-{a}.png" for a in mlp_attacks}
    expected |= {
        f"gallery-bncnn-adam-{a}.png" for a in ("pgd-linf-untargeted", "pgd-l2-untargeted")
    }
    assert names == expected
    for path in [out / "index.html", out / "summary.csv", out / "summary.md"]:
        assert path.stat().st_size > 0
    assert result["runs"] == 4 and result["records"] == len(records(run_root)) == 8
    assert sorted(p.name for p in result["figures"]) == sorted(expected)
    assert result["eps"] == {"linf": 0.1, "l2": 0.5}  # middle of the common nonzero grid
    # Progress: announced once with the total, then once per figure.
    assert calls[0][:2] == (0, len(expected)) and calls[-1][:2] == (len(expected), len(expected))
    assert not list(out.rglob("*.tmp"))


def test_figures_are_png_at_120_dpi_or_more(built):
    out, result, _ = built
    for path in result["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min(image.info["dpi"]) >= 119.99, path
            assert min(image.size) >= 400, path
            image.verify()


def test_index_links_every_figure_and_only_local_files(built):
    out, _, _ = built
    page = (out / "index.html").read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    figures = {link for link in parser.links if link.startswith("figures/")}
    assert figures == {f"figures/{p.name}" for p in (out / "figures").iterdir()}
    for link in parser.links:
        if link.startswith("#"):
            continue
        assert not re.match(r"^[a-z]+:", link), f"external link {link}"
        assert (out / link).is_file(), link
    assert "<script" not in page and 'rel="stylesheet"' not in page  # works offline


def test_summary_csv_holds_the_json_numbers(built, run_root):
    out, _, _ = built
    by_path = records(run_root)
    rows = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == len(by_path)
    for row in rows:
        record = by_path[Path(row["record"])]
        curve, settings = record["curve"], record["settings"]
        assert (row["run"], row["model"], row["optimizer"]) == (
            record["run"],
            record["model"],
            record["optimizer"],
        )
        assert (row["attack"], row["norm"]) == (settings["attack"], settings["norm"])
        assert float(row["clean_accuracy"]) == curve["clean_accuracy"]
        for key in ("epsilons", "accuracy", "success_rate"):
            assert [float(v) for v in row[key].split(";")] == curve[key]
        eps, value = float(row["eps_chosen"]), float(row["accuracy_at_eps_chosen"])
        if eps in curve["epsilons"]:
            assert row["interpolated"] == "no"
            assert value == curve["accuracy"][curve["epsilons"].index(eps)]
        else:  # the FGSM grid [0, 0.05, 0.15] lacks eps* = 0.1
            assert row["interpolated"] == "yes" and settings["attack"] == "fgsm"
            assert value == pytest.approx((curve["accuracy"][1] + curve["accuracy"][2]) / 2)
        xs, ys = curve["epsilons"], curve["accuracy"]
        area = sum(
            (b - a) * (c + d) / 2 for a, b, c, d in zip(xs, xs[1:], ys, ys[1:], strict=False)
        )
        assert float(row["auc"]) == pytest.approx(area / xs[-1], abs=1e-12)
        assert float(row["seconds"]) == curve["seconds"]
        summary = runs.read_json(run_root / row["run"] / runs.SUMMARY)
        assert float(row["test_accuracy"]) == summary["test_accuracy"]


def test_summary_md_holds_the_json_numbers_with_fixed_decimals(built, run_root):
    out, _, _ = built
    by_name = {(r["run"], p.stem): r for p, r in records(run_root).items()}
    lines = [
        line
        for line in (out / "summary.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and not line.startswith("| run ")
    ]
    assert len(lines) == len(by_name)
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        run, attack_, norm, target, loss = cells[0], cells[4], cells[5], cells[6], cells[7]
        stem = f"{attack_}-{norm}-" + (
            "untargeted" if target == "untargeted" else f"target-{target}"
        )
        curve = by_name[(run, stem)]["curve"]
        assert cells[9] == f"{curve['clean_accuracy']:.4f}"
        expected = ", ".join(
            f"{e:g}: {a:.4f}" for e, a in zip(curve["epsilons"], curve["accuracy"], strict=True)
        )
        assert cells[-1] == expected
        assert loss == "ce"


def test_unfinished_run_without_attacks_is_reported_with_notes(built):
    out, result, _ = built
    notes = [n for n in result["notes"] if n.startswith("mlp-momentum:")]
    assert any("did not finish" in n for n in notes) and any("no attacks" in n for n in notes)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "mlp-momentum: training did not finish" in page
    row = next(r for r in result["table"] if r["run"] == "mlp-momentum")
    assert row["test_accuracy"] is None and row["epochs"] == 2 and row["robust"] == {}


def test_colours_and_styles_are_one_mapping(run_root):
    assert report.model_color("bncnn") == report.MODEL_COLORS["bncnn"]
    assert report.optimizer_style("adam") == report.OPTIMIZER_STYLES["adam"]
    # Unknown names get a fallback that does not change between calls (nor processes: sha256).
    assert report.model_color("resnet") == report.model_color("resnet")
    assert report.model_color("resnet") not in report.MODEL_COLORS.values()
    assert report.optimizer_style("lion") == report.optimizer_style("lion")
    styles = [tuple(map(str, s.values())) for s in report.OPTIMIZER_STYLES.values()]
    assert len(set(styles)) == len(styles)
    # The same model has the same colour in two different figures.
    loaded = [report.load_report_run(p) for p in report.find_runs([run_root])]
    mlp_runs = [r for r in loaded if r.model == "mlp"]
    training = report.training_figure("mlp", mlp_runs)
    entries = [(r, rec) for r in loaded for rec in r.records if rec.name == "pgd-linf-untargeted"]
    curves = report.robustness_figure(entries[0][1].setting, entries, None)

    def colours(fig: Figure, label_has: str | None = None) -> set[str]:
        lines = [line for ax in fig.axes for line in ax.get_lines()]
        if label_has:
            lines = [line for line in lines if label_has in line.get_label()]
        return {str(line.get_color()) for line in lines if line.get_linestyle() != "None"}

    assert colours(training) == {report.MODEL_COLORS["mlp"]}
    assert colours(curves, "mlp-") == {report.MODEL_COLORS["mlp"]}
    assert colours(curves, "bncnn-") == {report.MODEL_COLORS["bncnn"]}


def test_value_at_is_the_json_number_or_a_marked_interpolation():
    curve = {"epsilons": [0.05, 0.1, 0.2], "accuracy": [0.9, 0.6, 0.1], "clean_accuracy": 1.0}
    assert report.value_at(curve, 0.1) == (0.6, False)
    assert report.value_at(curve, 0.15) == (pytest.approx(0.35), True)
    assert report.value_at(curve, 0.025) == (pytest.approx(0.95), True)  # clean accuracy at 0
    assert report.value_at(curve, 0.3) == (None, False)  # never extrapolated
    assert report.area_under_curve(curve) == pytest.approx(
        (0.05 * 1.9 / 2 + 0.05 * 1.5 / 2 + 0.1 * 0.7 / 2) / 0.2
    )


def test_a_given_eps_off_the_grid_is_interpolated_and_marked(run_root, tmp_path):
    result = report.build_report(
        [run_root / "mlp-adam", run_root / "mlp-sgd"], tmp_path, eps_linf=0.15, eps_l2=0.5
    )
    assert result["eps"] == {"linf": 0.15, "l2": 0.5}
    rows = list(csv.DictReader((tmp_path / "summary.csv").open(encoding="utf-8")))
    for row in rows:
        accuracy = [float(v) for v in row["accuracy"].split(";")]
        if row["norm"] == "linf":
            assert row["interpolated"] == "yes"
            assert float(row["accuracy_at_eps_chosen"]) == pytest.approx(
                (accuracy[1] + accuracy[2]) / 2
            )
        else:
            assert (
                row["interpolated"] == "no" and float(row["accuracy_at_eps_chosen"]) == accuracy[1]
            )
    assert "≈" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_bad_input_names_the_path_and_writes_nothing(run_root, tmp_path):
    out = tmp_path / "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(runs.RunError, match="empty.*not a run directory"):
        report.build_report([empty], out)
    with pytest.raises(runs.RunError, match="does not exist"):
        report.build_report([tmp_path / "missing"], out)
    with pytest.raises(ValueError, match="no run"):
        report.build_report([], out)
    with pytest.raises(ValueError, match="eps_linf"):
        report.build_report([run_root], out, eps_linf=-1.0)
    with pytest.raises(ValueError, match="run directory"):
        report.build_report([run_root], run_root / "mlp-adam")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / runs.CONFIG).write_text((run_root / "mlp-adam" / runs.CONFIG).read_text())
    (broken / "attacks").mkdir()
    (broken / "attacks" / "pgd-linf-untargeted.json").write_text('{"settings": {"attack": ')
    with pytest.raises(runs.RunError, match="pgd-linf-untargeted.json is not valid JSON"):
        report.build_report([broken], out)
    (broken / "attacks" / "pgd-linf-untargeted.json").write_text('{"settings": {}, "curve": {}}')
    with pytest.raises(runs.RunError, match="not a valid attack record"):
        report.build_report([broken], out)
    assert not out.exists()


def test_interrupted_report_leaves_only_complete_files(run_root, tmp_path, monkeypatch):
    out = tmp_path / "report"
    original = Figure.savefig
    calls = []

    def interrupted_on_third(self, fname, *args, **kwargs):
        calls.append(fname)
        if len(calls) == 3:
            Path(fname).write_bytes(b"\x89PNG\r\n\x1a\nhalf a figure")
            raise KeyboardInterrupt
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        report.build_report([run_root / "mlp-sgd"], out)
    monkeypatch.undo()
    left = [p for p in out.rglob("*") if p.is_file()]
    assert len(left) == 2 and all(p.suffix == ".png" for p in left), left
    for path in left:
        with Image.open(path) as image:
            image.verify()
    # Run again: complete, and figures of the older report that are not in this one go.
    (out / "figures" / "gallery-old-run.png").write_bytes(left[0].read_bytes())
    result = report.build_report([run_root / "mlp-sgd"], out)
    assert {p.name for p in (out / "figures").iterdir()} == {p.name for p in result["figures"]}
    assert not list(out.rglob("*.tmp"))


def test_attack_figure_draws_curve_and_gallery_grey_and_rgb(run_root, tmp_path):
    path = run_root / "mlp-adam" / "attacks" / "pgd-linf-target-random.json"
    record = runs.read_json(path)
    examples = runs.read_safetensors(path.with_name(record["examples"]["file"]))
    fig = report.attack_figure(record, examples)
    assert len(fig.axes) == 2  # the curve; the gallery in one Axes of image artists
    assert len(fig.axes[1].get_images()) == 3 * len(examples["y"])
    text = " ".join(t.get_text() for t in fig.axes[1].texts)
    assert "target" in text and "perturbation" in text and "grey = 0" in text
    assert "ε (L∞" in fig.axes[0].get_xlabel()
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
