"""Atomic file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through a temporary file in the same
    directory, flushed to disk and renamed into place (``os.replace`` is atomic on POSIX)."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
