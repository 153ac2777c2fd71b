"""Per-class numbers agree with a direct computation from the records and the data."""

from advkit import report
from advkit.report.combine import CellKey
from advkit.report.views import per_class


def test_per_class_robust_accuracy_matches_a_direct_count(run_root, small_digits):
    run = report.load_report_run(run_root / "mlp-adam")
    rec = next(r for r in run.records if r.setting.norm == "linf" and r.setting.target is None)
    got = per_class(run, CellKey("linf", None), 0.1)
    y = small_digits.y_test.tolist()
    expected: dict[int, list[int]] = {}
    for i, f in zip(rec.curve.per_sample["index"], rec.curve.per_sample["fooled_at"], strict=True):
        e = expected.setdefault(y[i], [0, 0])
        e[0] += f is None or f > 0.1
        e[1] += 1
    assert got == {k: tuple(v) for k, v in sorted(expected.items())}
    assert sum(n for _, n in got.values()) == rec.curve.n_samples
