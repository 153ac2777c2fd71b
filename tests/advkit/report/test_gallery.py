"""Galleries: which run and attacks they show, and what a gallery draws."""

from advkit import report
from advkit.report import gallery, numbers


def test_galleries_show_the_most_accurate_run_and_its_strongest_attacks(run_root):
    loaded = [report.load_report_run(p) for p in report.find_runs([run_root])]
    chosen = report.choose_eps(loaded, {})
    mlp = [r for r in loaded if r.model == "mlp"]
    shown = gallery.gallery_run(mlp)
    assert shown.test_accuracy == max(r.test_accuracy or 0.0 for r in mlp)
    bncnn = next(r for r in loaded if r.name == "bncnn-adam")
    picked = gallery.gallery_records(bncnn, chosen)
    # One per norm and target mode: the strongest at eps*, of PGD and FGSM under L∞.
    assert [r.setting.norm for r in picked] == ["linf", "l2"]
    linf = [r for r in bncnn.records if r.setting.norm == "linf"]
    assert picked[0] is numbers.strongest(linf, chosen["linf"].eps)


def test_gallery_figure_draws_three_rows_per_example(run_root):
    run = report.load_report_run(run_root / "mlp-adam")
    rec = next(r for r in run.records if r.setting.slug == "pgd-l2-untargeted")
    fig = report.gallery_figure(run, rec)
    (ax,) = fig.axes
    n = min(len(rec.examples["y"]), gallery.GALLERY_MAX)
    assert len(ax.get_images()) == 3 * n
    text = " ".join(t.get_text() for t in ax.texts)
    assert "‖δ‖₂" in text and "clean" in text and f"ε = {rec.examples_eps:g}" in text
    assert "mlp · adam: PGD L2 untargeted" in text
