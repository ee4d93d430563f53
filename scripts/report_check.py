"""Open a kernelens report in headless Chromium and check it as a reader's browser sees it.

Usage::

    python scripts/report_check.py REPORT_DIR [--screenshot FILE]

Checks that every image loads and shows its smallest text at >= 10 px, that every ``#anchor``
link has its target and every file link its file, and that the console logged no error; then
saves a screenshot (default: ``REPORT_DIR/screenshot.png``). Needs the Debian packages
``chromium`` and ``chromium-driver`` and selenium (``make report-check`` installs them).
Exits 1 listing the problems found.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

#: Chromium flags for a quiet, isolated headless run (no network calls of its own).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
)
#: Smallest text height (CSS px) a figure may show at its displayed size (as the report's).
MIN_TEXT_PX = 10.0

_IMAGES_JS = """
return Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
  minFont: parseFloat(i.dataset.minFontPx || "0")}));
"""
_LINKS_JS = """
return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));
"""
_IDS_JS = "return Array.from(document.querySelectorAll('[id]')).map(e => e.id);"


def _binary(*names: str) -> str:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    raise FileNotFoundError(
        f"none of {', '.join(names)} is installed: apt-get install chromium chromium-driver "
        "(or run `make report-check`, which installs them)."
    )


def check_report(report_dir: str | Path, screenshot: str | Path | None = None) -> list[str]:
    """Open ``report_dir/index.html`` headless; return the problems found (empty: all good)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    report_dir = Path(report_dir).resolve()
    page = report_dir / "index.html"
    if not page.is_file():
        return [f"{page} does not exist: build the report first (kernelens report --quick)."]
    opts = webdriver.ChromeOptions()
    opts.binary_location = _binary("chromium", "chromium-browser")
    profile = tempfile.mkdtemp(prefix="kernelens-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_binary("chromedriver"))
    problems: list[str] = []
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(_IMAGES_JS)
        if not images:
            problems.append("the report shows no image.")
        for img in images:
            if not img["complete"] or img["natural"] == 0:
                problems.append(f"image {img['alt']!r} did not load.")
            elif (
                img["minFont"]
                and img["minFont"] * img["shown"] / img["natural"] < MIN_TEXT_PX - 0.05
            ):
                px = img["minFont"] * img["shown"] / img["natural"]
                problems.append(
                    f"image {img['alt']!r} shows text at {px:.1f} px (< {MIN_TEXT_PX})."
                )
        ids = set(driver.execute_script(_IDS_JS))
        for href in driver.execute_script(_LINKS_JS):
            if href.startswith("#"):
                if href[1:] not in ids:
                    problems.append(f"link {href} has no target on the page.")
            elif "://" not in href and not (report_dir / href).is_file():
                problems.append(f"link {href} points to a missing file.")
        for entry in driver.get_log("browser"):
            if entry.get("level") == "SEVERE":
                problems.append(f"console error: {entry.get('message')}")
        driver.save_screenshot(str(screenshot or report_dir / "screenshot.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    problems = check_report(args.report_dir, args.screenshot)
    for p in problems:
        print(f"report-check: {p}", file=sys.stderr)
    if problems:
        return 1
    shot = args.screenshot or args.report_dir / "screenshot.png"
    print(f"report-check: ok ({args.report_dir / 'index.html'}; screenshot {shot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
