"""mkdocs hooks for the kernelens site (see mkdocs.yml).

- API reference: one page ``api/<name>.md`` per public subpackage of :mod:`kernelens` (every
  ``kernelens.<name>`` package whose name does not start with ``_``), rendered by mkdocstrings
  from the docstrings, so a new subpackage gets its page without editing anything.
- Examples gallery: each ``docs/examples/*.py`` script is run (``python SCRIPT OUT.png``) and
  the page ``examples/index.md`` shows its code and the figure it saved.
- ``CHANGELOG.md`` and ``BENCHMARKS.md`` of the repository root become pages, and the guides'
  links to ``../CHANGELOG.md`` / ``../BENCHMARKS.md`` (right on GitHub) point to them.
- Guides: any ``docs/*.md`` page not in the nav is appended under "Guides".
- Docstrings: their Sphinx roles (``:func:`x```) are shown as plain code.
"""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
ROOT_PAGES = {"CHANGELOG.md": "changelog.md", "BENCHMARKS.md": "benchmarks.md"}
_FIGURES: dict[str, bytes] = {}


def _subpackages() -> list[str]:
    pkg = ROOT / "src" / "kernelens"
    return sorted(
        m.name for m in pkgutil.iter_modules([str(pkg)]) if m.ispkg and not m.name.startswith("_")
    )


def _titles(nav: list) -> set[str]:
    out: set[str] = set()
    for item in nav:
        for v in item.values() if isinstance(item, dict) else [item]:
            out |= _titles(v) if isinstance(v, list) else {v}
    return out


def on_config(config, **kwargs):
    nav = config["nav"]
    listed = _titles(nav)
    extra = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name not in listed)
    for item in nav:
        if isinstance(item, dict) and "Guides" in item:
            item["Guides"] += [{p.removesuffix(".md"): p} for p in extra]
    nav.append({"Examples": "examples/index.md"})
    nav.append({"API reference": [{f"kernelens.{n}": f"api/{n}.md"} for n in _subpackages()]})
    nav += [{"Benchmarks": "benchmarks.md"}, {"Changelog": "changelog.md"}]
    return config


def _run_examples() -> list[tuple[str, str, str]]:
    """Run every gallery script; returns ``(stem, title, code)`` and fills ``_FIGURES``."""
    out = []
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src")}
    for script in sorted(EXAMPLES.glob("*.py")):
        code = script.read_text(encoding="utf-8")
        title = (
            code.split('"""')[1].strip().splitlines()[0] if code.startswith('"""') else script.stem
        )
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / f"{script.stem}.png"
            proc = subprocess.run(
                [sys.executable, str(script), str(png)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0 or not png.is_file():
                raise RuntimeError(f"gallery example {script.name} failed:\n{proc.stderr[-3000:]}")
            _FIGURES[script.stem] = png.read_bytes()
        out.append((script.stem, title, code))
    return out


def on_files(files, config, **kwargs):
    for name in _subpackages():
        body = f"# `kernelens.{name}`\n\n::: kernelens.{name}\n"
        files.append(File.generated(config, f"api/{name}.md", content=body))
    parts = [
        "# Examples",
        "",
        "Runnable scripts (in `docs/examples/` of the repository; the tests run every one). "
        "Each saves its figure to the path given as its first argument.",
        "",
    ]
    for stem, title, code in _run_examples():
        parts += [
            f"## {title}",
            "",
            f"`docs/examples/{stem}.py`",
            "",
            "```python",
            code.rstrip(),
            "```",
            "",
            f"![{title}]({stem}.png)",
            "",
        ]
        files.append(File.generated(config, f"examples/{stem}.png", content=_FIGURES[stem]))
    files.append(File.generated(config, "examples/index.md", content="\n".join(parts)))
    for src, dest in ROOT_PAGES.items():
        text = (ROOT / src).read_text(encoding="utf-8")
        files.append(File.generated(config, dest, content=_relink(text, up="docs/")))
    for f in list(files):
        if f.src_uri.startswith("examples/") and f.src_uri.endswith(".py"):
            files.remove(f)
    return files


def _relink(text: str, up: str = "") -> str:
    """Links of a root page into docs/ (``docs/x.md`` -> ``x.md``)."""
    return re.sub(r"\]\(" + re.escape(up) + r"([^)]+\.md)", r"](\1", text) if up else text


def on_page_markdown(markdown, page, **kwargs):
    for src, dest in ROOT_PAGES.items():
        depth = page.file.src_uri.count("/")
        target = "../" * depth + dest
        markdown = markdown.replace(f"](../{src}", f"]({target}")
    return markdown


_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj|const):(<code>)~?")


def on_page_content(html, page, **kwargs):
    """The docstrings use Sphinx roles (``:func:`name```); show them as plain code."""
    return _ROLE.sub(r"\1", html)
