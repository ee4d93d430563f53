"""The examples gallery (docs/examples/*.py): every script runs and saves its figure."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.py"))


def test_gallery_is_not_empty():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_saves_its_figure(script, tmp_path, monkeypatch):
    out = tmp_path / f"{script.stem}.png"
    monkeypatch.setattr(sys, "argv", [str(script), str(out)])
    text = script.read_text(encoding="utf-8")
    assert text.startswith('"""'), "the docstring's first line is the gallery title"
    runpy.run_path(str(script), run_name="__main__")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
