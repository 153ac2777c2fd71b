"""One visual vocabulary: a colour per model, a line style per optimizer, labels."""

from advkit import report
from advkit.report import style


def test_colours_and_styles_are_one_mapping():
    assert report.model_color("bncnn") == report.MODEL_COLORS["bncnn"]
    assert report.optimizer_style("adam") == report.OPTIMIZER_STYLES["adam"]
    # Unknown names get a fallback that does not change between calls (nor processes: sha256).
    assert report.model_color("resnet") == report.model_color("resnet")
    assert report.model_color("resnet") not in report.MODEL_COLORS.values()
    assert report.optimizer_style("lion") == report.optimizer_style("lion")
    styles = [tuple(map(str, s.values())) for s in report.OPTIMIZER_STYLES.values()]
    assert len(set(styles)) == len(styles)


def test_labels_and_formats():
    assert report.fmt(0.123456) == "0.1235" and report.fmt(None) == "—"
    assert report.fmt(12.345, 1) == "12.3"
    assert style.eps_text(0.1) == "0.1" and style.eps_text(16 / 255) == "0.0627451"
    assert style.attack_title("apgd") == "APGD"  # any attack, no table of names
    assert style.target_label(None) == "untargeted"
    assert style.target_label(3) == "targeted (class 3)"
    assert style.target_label("random") == "targeted (random)"
    assert style.safe("<script>alert(1)</script>") == "script_alert_1_script"
    assert style.ordered({"zz", "adam", "sgd"}, style.OPTIMIZER_ORDER) == ["sgd", "adam", "zz"]
