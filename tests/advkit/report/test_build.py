"""build_report on real runs: the files it writes, its notes, bad input, interruption."""

import csv
import shutil
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from advkit import report, runs


def test_every_expected_file_is_written(built, records):
    out, result, calls = built
    names = {p.name for p in (out / "figures").iterdir()}
    for kind in ("comparison", "curves"):
        for cell in ("linf-untargeted", "l2-untargeted", "linf-target-random"):
            assert f"{kind}-digits-{cell}.png" in names
    for kind in ("per-class", "breaking", "confusion", "confidence", "gaps"):
        assert f"{kind}-digits-linf-untargeted.png" in names
    assert {"training-digits-mlp.png", "training-digits-bncnn.png"} <= names
    assert any(n.startswith("gallery-digits-") for n in names)
    for path in [out / "index.html", out / "summary.csv", out / "summary.md"]:
        assert path.stat().st_size > 0
    assert result["runs"] == 4 and result["records"] == len(records) == 8
    assert sorted(p.name for p in result["figures"]) == sorted(names)
    assert result["eps"] == {"linf": 0.1, "l2": 0.5}  # middle of the common nonzero grid
    # Progress: announced once with the total, then once per planned figure.
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] >= len(names)
    assert not list(out.rglob("*.tmp"))


def test_unfinished_run_without_attacks_is_reported_with_notes(built):
    out, result, _ = built
    notes = [n for n in result["notes"] if n.startswith("mlp-momentum:")]
    assert any("did not finish" in n for n in notes) and any("no attacks" in n for n in notes)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "mlp-momentum: training did not finish" in page
    row = next(r for r in result["table"] if r["run"] == "mlp-momentum")
    assert row["test_accuracy"] is None and row["epochs"] == 2 and row["robust"] == {}


@pytest.mark.slow  # builds another whole report
def test_a_given_eps_off_the_grid_is_an_upper_bound_and_marked(run_root, tmp_path):
    result = report.build_report(
        [run_root / "mlp-adam", run_root / "mlp-sgd"], tmp_path, eps_linf=0.15, eps_l2=0.5
    )
    assert result["eps"] == {"linf": 0.15, "l2": 0.5}
    rows = list(csv.DictReader((tmp_path / "summary.csv").open(encoding="utf-8")))
    for row in rows:
        accuracy = [float(v) for v in row["accuracy"].split(";")]
        # 0.15 lies between 0.1 and 0.2 of the grid: the accuracy at 0.1 bounds it.
        bound, value = row["bound"], float(row["accuracy_at_eps_chosen"])
        assert (bound, value) == ("yes" if row["norm"] == "linf" else "no", accuracy[1])
    assert "≤" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    for r in result["table"]:
        assert r["robust"]["linf"]["bound"] is True and r["robust"]["l2"]["bound"] is False
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "ε* lies between two measured budgets" in page


@pytest.mark.slow  # attacks twice, builds a whole report
def test_val_and_test_records_get_separate_figures(run_root, tmp_path, small_digits, attack_fn):
    run = tmp_path / "runs" / "mlp-sgd"
    shutil.copytree(run_root / "mlp-sgd", run)
    attack_fn(run, small_digits, split="val")
    result = report.build_report([run], tmp_path / "report")
    names = {p.name for p in result["figures"]}
    assert {"curves-digits-linf-untargeted.png", "curves-digits-linf-untargeted-val.png"} <= names
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "L∞ untargeted, val split" in page
    assert result["records"] == 3


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
    with pytest.raises(runs.RunError, match="is not an attack record"):
        report.build_report([broken], out)
    assert not out.exists()


@pytest.mark.slow  # builds another whole report
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
