"""A plain, non-editable ``pip install .`` with the core dependencies only (issue 16).

Slow (a fresh venv takes minutes): ``make plain-check`` runs it, and so does ``.ci/run``. Set
``KERNELENS_PLAIN_VENV`` to a venv that already has torch==2.13.0 and no extras to reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_plain_install_runs_the_cli(tmp_path):
    env_dir = os.environ.get("KERNELENS_PLAIN_VENV")
    if env_dir:
        py = Path(env_dir) / "bin" / "python"
    else:
        venv.create(tmp_path / "venv", with_pip=True)
        py = tmp_path / "venv" / "bin" / "python"
        _run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], tmp_path)
    _run([str(py), "-m", "pip", "uninstall", "-y", "-q", "kernelens"], tmp_path)
    _run([str(py), "-m", "pip", "install", "-q", str(ROOT)], tmp_path)
    probe = _run(
        [
            str(py),
            "-c",
            "import importlib.util, json, kernelens; print(json.dumps([kernelens.__file__, "
            "[m for m in ('sacrebleu', 'gymnasium', 'stim', 'pymatching', 'faiss', 'dask') "
            "if importlib.util.find_spec(m)]]))",
        ],
        tmp_path,
    )
    where, extras = json.loads(probe.stdout)
    assert "site-packages" in where and not where.startswith(str(ROOT)), where
    assert extras == [], f"not a plain install: {extras} are installed"
    exe = str(Path(py).parent / "kernelens")
    assert _run([exe, "--version"], tmp_path).stdout.startswith("kernelens ")
    listing = _run([exe, "list"], tmp_path).stdout
    assert "kernel_baselines" in listing and "needs kernelens[experiments]" in listing
    out = tmp_path / "D"
    _run([exe, "run", "kernel_baselines", "--quick", "--out", str(out)], tmp_path)
    data = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in data["entries"]] == ["kernel_baselines"]
    assert data["entries"][0]["error"] is None and (out / "index.html").is_file()
    missing = subprocess.run(
        [exe, "run", "rfm_text", "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert missing.returncode == 2 and 'pip install "kernelens[experiments]"' in missing.stderr
