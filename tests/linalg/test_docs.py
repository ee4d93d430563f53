"""The Python snippets in docs/linalg.md run as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "linalg.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
# blocks that only show a signature are not runnable on their own
RUNNABLE = [b for b in BLOCKS if not re.match(r"^\w+\(", b)]


def test_doc_has_snippets() -> None:
    assert len(RUNNABLE) >= 8


@pytest.mark.parametrize("index", range(len(RUNNABLE)))
def test_snippet_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the snippets must not trigger convergence warnings
        exec(compile(RUNNABLE[index], f"{DOC}:block{index}", "exec"), {})
    assert capsys.readouterr().out
