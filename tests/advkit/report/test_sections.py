"""Adversarial training, defenses and transfer in the report, on small real runs."""

import re
import shutil

import pytest

from advkit import report
from advkit.report.combine import CellKey, run_cells
from advkit.report.groups import group_runs
from advkit.report.load import load_report_run
from advkit.report.transfers import attack_label, dataset_transfers, transfer_table
from advkit.train import TrainConfig, train
from advkit.transfer import TransferSettings, default_path, read_record, transfer_runs, write_record

LINF = CellKey("linf", None)

# Trains a PGD-AT run and attacks through JPEG (whose naive gradient is zero).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*exactly-zero input gradient"),
]


@pytest.fixture(scope="module")
def root(run_root, small_digits, attack_fn, tmp_path_factory):
    """Copies of two attacked runs, a PGD-AT run, defense records and two transfer records."""
    root = tmp_path_factory.mktemp("sections")
    for name in ("mlp-adam", "bncnn-adam"):
        shutil.copytree(run_root / name, root / name)
    at = root / "mlp-adam-pgd-at"
    config = TrainConfig(model="mlp", optimizer="adam", epochs=2, adversarial="pgd",
                         adv_eps=0.1, adv_steps=2)  # fmt: skip
    train(config, at, dataset=small_digits)
    attack_fn(at, small_digits)
    for adaptive in (None, "bpda"):
        attack_fn(root / "mlp-adam", small_digits, defense="jpeg:75", adaptive=adaptive)
    victims = [root / "mlp-adam", root / "bncnn-adam"]
    for attack, options in (("fgsm", {}), ("mifgsm", {"decay": 0.0})):
        settings = TransferSettings.make(attack=attack, epsilons=[0.2], limit=40, **options)
        record = transfer_runs([[v] for v in victims], victims, settings, data=small_digits)
        write_record(record, default_path(record, victims[0]), figure=False)
    return root


@pytest.fixture(scope="module")
def built(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sections-report")
    return out, report.build_report([root], out)


def test_adversarially_trained_runs_are_labelled(root, built):
    groups = group_runs([load_report_run(p) for p in sorted(root.iterdir())])
    labels = {g.first.name: g.label for g in groups}
    assert labels["mlp-adam-pgd-at"] == "mlp · adam · PGD-AT ε=0.1"
    assert labels["mlp-adam"] == "mlp · adam"
    page = (built[0] / "index.html").read_text()
    assert "mlp · adam · PGD-AT ε=0.1" in page
    assert "(mlp-adam-pgd-at)" not in page
    assert "Adversarial training" in page and "tradeoff-digits-linf-untargeted.png" in page


def test_defense_records_stay_out_of_the_undefended_worst_case(root, run_root):
    defended = load_report_run(root / "mlp-adam")
    bare = load_report_run(run_root / "mlp-adam")
    assert len(defended.defended) == 2 and len(bare.defended) == 0
    assert all(r.stored.settings.defense is None for r in defended.records)
    mine, theirs = run_cells(defended)[LINF], run_cells(bare)[LINF]
    assert sorted(r.name for r in mine.records) == sorted(r.name for r in theirs.records)
    assert mine.fooled_at == theirs.fooled_at
    for eps in mine.grid:
        assert mine.accuracy_at(eps) == theirs.accuracy_at(eps)


def test_defense_section_pairs_naive_and_adaptive(built):
    out, _ = built
    page = (out / "index.html").read_text()
    assert "Defenses: naive vs adaptive" in page
    assert "jpeg:75" in page and "BPDA:" in page
    assert "The lecture&#39;s warning, in numbers" in page or "warning, in numbers" in page


def test_transfer_table_equals_the_records(root, built):
    records = [read_record(p) for p in sorted((root / "mlp-adam" / "transfers").glob("*.json"))]
    run = load_report_run(root / "mlp-adam")
    found = dataset_transfers([run])
    assert [attack_label(r) for r in found] == ["FGSM", "I-FGSM"]
    head, rows = transfer_table(found)
    assert head == ["source", "victim", "kind", "FGSM", "I-FGSM"]
    for rec in records:
        col = head.index(attack_label(rec))
        for i, s in enumerate(rec.sources):
            for j, v in enumerate(rec.victims):
                row = next(r for r in rows if r[0] == s and r[1] == v)
                assert row[col][0] == rec.accuracy[0][i][j]
                assert row[col][1] == tuple(rec.intervals[0][i][j])
                assert row[2] == ("white-box" if s == v else "transfer")
    page = (built[0] / "index.html").read_text()
    assert "transfer-digits.png" in page
    value = rows[0][3][0]
    assert f"{value:.3f}" in page


def test_every_linked_figure_exists(built):
    out, result = built
    page = (out / "index.html").read_text()
    linked = set(re.findall(r'src="(figures/[^"]+)"', page))
    assert linked and all((out / src).is_file() for src in linked)
    names = {p.name for p in result["figures"]}
    for expected in ("transfer-digits.png", "tradeoff-digits-linf-untargeted.png",
                     "at-vs-standard-digits-linf-untargeted-mlp.png"):  # fmt: skip
        assert expected in names
    assert any(n.startswith("defense-digits-mlp-adam") for n in names)


def test_labels_of_nearby_points_do_not_print_over_each_other():
    import matplotlib

    matplotlib.use("Agg")
    from types import SimpleNamespace

    from advkit.report.canvas import new_figure
    from advkit.report.trained import _label_points

    fig = new_figure(8, 5)
    ax = fig.subplots()
    points = [(0.967, 0.736), (0.969, 0.728), (0.975, 0.783), (0.897, 0.617)]
    ax.plot(*zip(*points, strict=True), "o")
    names = ["PGD-AT ε=0.1", "FGSM-RS-AT ε=0.1", "PGD-AT ε=0.1", "PGD-AT ε=0.1"]
    labels = [
        (SimpleNamespace(training=name, model=model), x, y)
        for name, model, (x, y) in zip(names, ["bncnn", "bncnn", "mlp", "attention"], points,
                                       strict=True)
    ]  # fmt: skip
    _label_points(ax, labels)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
