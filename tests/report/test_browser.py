"""The report in a real browser: headless Chromium checks images, anchors and the console.

Slow; needs the Debian packages chromium and chromium-driver and selenium (``make
report-check`` installs them and runs the same check on the full quick report).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from kernelens.experiments import Claim, Result, Table
from kernelens.report import ReportEntry, write_report

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "report_check.py"


def _check_report():
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install selenium, or make report-check)")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium / chromium-driver are not installed (make report-check does it)")
    spec = importlib.util.spec_from_file_location("report_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.check_report


def _entries() -> list[ReportEntry]:
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for ax in axes:
        ax.plot([0, 1, 2], [2, 1, 0])
        ax.set_title("panel")
    small, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    r = Result(
        "toy",
        "Toy",
        summary="Two figures.",
        tables=[Table("t", ["a", "b"], [[1, None]])],
        figures=[("five panels", fig), ("small", small)],
        claims=[Claim("x", "y", "reproduced")],
    )
    return [
        ReportEntry("toy", "Toy", "ntk", 0.5, result=r),
        ReportEntry("broken", "Broken", "rfm", 0.0, error="Traceback: boom"),
    ]


def test_report_passes_the_browser_check(tmp_path):
    check_report = _check_report()
    write_report(_entries(), tmp_path)
    shot = tmp_path / "shot.png"
    assert check_report(tmp_path, shot) == []
    assert shot.stat().st_size > 10_000


def test_browser_check_finds_broken_pages(tmp_path):
    check_report = _check_report()
    write_report(_entries(), tmp_path)
    page = tmp_path / "index.html"
    text = page.read_text().replace('href="#exp-broken"', 'href="#nowhere"', 1)
    text = text.replace("</body>", "<script>console.error('boom')</script></body>")
    page.write_text(text)
    (tmp_path / "figures" / "toy_1.png").unlink()
    problems = check_report(tmp_path, tmp_path / "shot.png")
    assert any("#nowhere has no target" in p for p in problems)
    assert any("console error" in p for p in problems)
    assert any("figures/toy_1.png points to a missing file" in p for p in problems)
