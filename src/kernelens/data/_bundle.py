"""Locate the data files shipped inside the package and check them against the manifest."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

__all__ = ["BUNDLE_DIR", "MANIFEST_NAME", "bundled_file", "sha256_file"]

BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
MANIFEST_NAME = "MANIFEST.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _manifest() -> dict[str, dict[str, object]]:
    path = BUNDLE_DIR / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled data manifest {path} is missing; the kernelens installation is "
            "incomplete: reinstall it (pip install --force-reinstall kernelens) or rebuild the "
            "bundle with `python scripts/make_bundle.py` in a source checkout (see docs/data.md)."
        )
    return json.loads(path.read_text(encoding="utf-8"))["files"]


@functools.cache
def bundled_file(name: str) -> Path:
    """Path of the bundled file ``name`` after checking its size and SHA-256 (once per process).

    Raises:
        FileNotFoundError: the file is not in the bundle.
        OSError: the file does not match the manifest (e.g. a Git LFS pointer or a truncated
            copy).
    """
    files = _manifest()
    path = BUNDLE_DIR / name
    if name not in files or not path.is_file():
        raise FileNotFoundError(
            f"bundled data file {name!r} is missing from {BUNDLE_DIR}; reinstall kernelens."
        )
    entry = files[name]
    size = path.stat().st_size
    if size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        raise OSError(
            f"bundled data file {path} does not match its manifest entry (expected "
            f"{entry['bytes']} bytes with sha256 {entry['sha256']}, found {size} bytes); the copy "
            "is damaged (a Git LFS pointer? run `git lfs pull`) or was edited; reinstall kernelens "
            "or rebuild the bundle with `python scripts/make_bundle.py` (in a source checkout)."
        )
    return path
