"""The HTML page: local links only, escaped text, tables in scrolling boxes."""

import html.parser
import re
import shutil

import pytest

from advkit import report


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


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


def test_both_tables_sit_in_their_own_scrolling_box(built):
    out, _, _ = built
    page = (out / "index.html").read_text(encoding="utf-8")
    # per dataset: results and which records were combined; then all records
    assert page.count('<div class="table-box"') == 3
    assert page.count("<table>") == 3
    boxes = re.findall(r'<div class="table-box"[^>]*>\s*<table>', page)
    assert len(boxes) == 3  # every table directly inside a box
    css = re.search(r"\.table-box \{([^}]*)\}", page).group(1)
    assert "overflow-x: auto" in css and "border" in css
    assert page.count("scrolls sideways") == 3  # the visible hint above each box


@pytest.mark.slow  # builds another whole report
def test_run_names_and_paths_are_escaped(run_root, tmp_path):
    # A directory name cannot hold "/", so the script tag spans two directories
    # (its path is on the page) and a second run's name holds an <img> tag.
    script = tmp_path / "<script>alert(1)</script>"
    img = tmp_path / "runs" / "<img src=x onerror=alert(1)>"
    shutil.copytree(run_root / "mlp-adam", script)
    shutil.copytree(run_root / "mlp-sgd", img)
    out = tmp_path / "report"
    report.build_report([script, img], out)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    parser = Links()
    parser.feed(page)
    for link in parser.links:
        if not link.startswith("#"):
            assert (out / link).is_file(), link


def test_every_figure_linked_exists_and_every_number_states_its_interval(built):
    out, _, _ = built
    page = (out / "index.html").read_text(encoding="utf-8")
    for src in re.findall(r'src="([^"]+)"', page):
        assert (out / src).is_file(), src
    assert "about ±" in page and "not a finding" in page or "is a finding" in page
    assert "Which records each number combines" in page
    assert "n=48" in page
