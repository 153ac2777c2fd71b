"""summary.csv and summary.md hold the runs' JSON numbers."""

import csv
from pathlib import Path

import pytest

from advkit import report, runs


def test_summary_csv_holds_the_json_numbers(built, run_root, records):
    out, _, _ = built
    by_path = records
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
        assert row["split"] == settings["split"]
        assert float(row["clean_accuracy"]) == curve["clean_accuracy"]
        for key in ("epsilons", "accuracy", "success_rate"):
            assert [float(v) for v in row[key].split(";")] == curve[key]
        eps, value = float(row["eps_chosen"]), float(row["accuracy_at_eps_chosen"])
        if eps in curve["epsilons"]:
            assert row["bound"] == "no"
            assert value == curve["accuracy"][curve["epsilons"].index(eps)]
        else:  # the FGSM grid [0, 0.05, 0.15] lacks eps* = 0.1: bounded by 0.05's
            assert row["bound"] == "yes" and settings["attack"] == "fgsm"
            assert value == curve["accuracy"][1]
        xs, ys = curve["epsilons"], curve["accuracy"]
        area = sum(
            (b - a) * (c + d) / 2 for a, b, c, d in zip(xs, xs[1:], ys, ys[1:], strict=False)
        )
        assert float(row["auc"]) == pytest.approx(area / xs[-1], abs=1e-12)
        assert float(row["seconds"]) == curve["seconds"]
        summary = runs.read_json(run_root / row["run"] / runs.SUMMARY)
        assert float(row["test_accuracy"]) == summary["test_accuracy"]


def test_summary_md_holds_the_json_numbers_with_fixed_decimals(built, records):
    out, _, _ = built
    by_name = {(r["run"], p.stem[:-9]): r for p, r in records.items()}  # less the hash
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
        assert cells[8] == by_name[(run, stem)]["settings"]["split"] == "test"
        assert cells[10] == str(curve["n_samples"])  # after split and attack settings
        assert cells[11] == f"{curve['clean_accuracy']:.4f}"
        expected = ", ".join(
            f"{e:g}: {a:.4f}" for e, a in zip(curve["epsilons"], curve["accuracy"], strict=True)
        )
        assert cells[-2] == expected  # before the warnings column
        assert loss == "ce"


def test_headline_is_the_per_sample_worst_case_over_the_untargeted_records(built, run_root):
    _, result, _ = built
    row = next(r for r in result["table"] if r["run"] == "bncnn-adam")
    eps = result["eps"]["linf"]
    run = report.load_report_run(run_root / "bncnn-adam")
    linf = [r for r in run.records if r.setting.norm == "linf" and r.setting.target is None]
    assert {r.short for r in linf} == {"PGD-3 (first 48)", "FGSM (first 48)"}
    assert row["robust"]["linf"]["attack"] == "FGSM (first 48) + PGD-3 (first 48)"
    # Direct computation: a sample is robust unless some record fooled it at a budget <= eps.
    fooled = [rec.curve.per_sample["fooled_at"] for rec in linf]
    assert linf[0].curve.per_sample["index"] == linf[1].curve.per_sample["index"]
    robust = sum(all(f is None or f > eps for f in column) for column in zip(*fooled, strict=True))
    assert row["robust"]["linf"]["accuracy"] == robust / 48
    assert row["robust"]["linf"]["n"] == 48
    lo, hi = row["robust"]["linf"]["interval"]
    assert lo <= robust / 48 <= hi
    for rec in linf:  # never above any single record
        value, _ = report.value_at(rec.curve, eps)
        assert value is None or robust / 48 <= value
