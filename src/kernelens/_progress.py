"""Progress bars that show on a terminal and stay silent otherwise (CI, pipes, notebooks off)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress", "progress_enabled"]


def progress_enabled(enable: bool | None = None) -> bool:
    """Whether to draw a bar: explicit ``enable`` wins, then ``KERNELENS_PROGRESS=0/1``,
    then "stderr is a terminal and CI is not set"."""
    if enable is not None:
        return enable
    env = os.environ.get("KERNELENS_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "False", "")
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    enable: bool | None = None,
    min_items: int = 2,
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when :func:`progress_enabled` and the loop has at
    least ``min_items`` items; otherwise return it unchanged."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not progress_enabled(enable) or (total is not None and total < min_items):
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True))
