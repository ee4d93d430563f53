"""The Python snippets of README.md and of every page in docs/ run as written.

Each docs/ snippet runs on its own in a fresh namespace, with UserWarnings as errors (a
snippet must not show a user kernelens' convergence, jitter or AGOP warnings, all
UserWarnings; deprecation notices from torch itself are not ours to fix); README.md's snippets run in order in
one namespace, as a reader following the tour would run them.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    """The fenced ```python blocks of ``path``, minus those that only show a signature
    (a block that starts with ``name(``)."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if not re.match(r"^\w+\(", b)]


SNIPPETS = [(doc, i, code) for doc in DOCS for i, code in enumerate(python_blocks(doc))]


def test_every_doc_page_has_runnable_snippets() -> None:
    assert DOCS, "docs/ has no pages"
    assert {doc.name for doc in DOCS} == {doc.name for doc, _, _ in SNIPPETS}


@pytest.mark.parametrize(
    ("doc", "index", "code"), SNIPPETS, ids=[f"{d.stem}-{i}" for d, i, _ in SNIPPETS]
)
def test_doc_snippet_runs(doc: Path, index: int, code: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exec(compile(code, f"{doc.name} python block {index}", "exec"), {})


def test_readme_snippets_run() -> None:
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 4
    namespace: dict[str, object] = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
