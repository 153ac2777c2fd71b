"""Screenshots of a report's index.html in headless Chromium at 1,400 and 800 px.

    python3 scripts/screenshots.py REPORT_DIR [--out DIR] [--height 6000]

Writes ``DIR/NAME-1400.png`` and ``DIR/NAME-800.png`` (NAME: the report folder's
name; DIR defaults to ``REPORT_DIR/../screenshots``). Screenshots are for looking
at, not for committing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

WIDTHS = (1400, 800)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no chromium on PATH")


def shoot(report: Path, out: Path, height: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    index = (report / "index.html").resolve()
    made = []
    for width in WIDTHS:
        target = out / f"{report.name}-{width}.png"
        subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars=false",
             f"--screenshot={target}", f"--window-size={width},{height}", index.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        made.append(target)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--height", type=int, default=6000)
    args = parser.parse_args()
    for path in shoot(args.report, args.out or args.report.parent / "screenshots", args.height):
        print(path)


if __name__ == "__main__":
    main()
