"""Memory budgets and tile sizes for computations that must not form large matrices."""

from __future__ import annotations

import math
import os
import re

import torch

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "default_memory_budget",
    "element_size",
    "resolve_memory_budget",
    "tile_grid",
    "tile_size",
]

#: The budget used when the caller sets none: a fixed 2 GiB, so that every choice that depends on
#: the budget (tile sizes, ``solver="auto"``) depends only on the data and this declared number,
#: never on how much memory happens to be free at call time.
DEFAULT_MEMORY_BUDGET = 2 << 30
#: Environment variable that overrides :data:`DEFAULT_MEMORY_BUDGET` (bytes; suffixes K, M, G).
MEMORY_BUDGET_ENV = "KERNELENS_MEMORY_BUDGET"
#: Floor so tiny budgets still make progress (bytes).
MIN_BUDGET = 1 << 20

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{MEMORY_BUDGET_ENV}={text!r} is not a positive number of bytes; write for example "
            f"{MEMORY_BUDGET_ENV}=2147483648 or {MEMORY_BUDGET_ENV}=2G."
        )
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])


def default_memory_budget() -> int:
    """The default budget in bytes: ``$KERNELENS_MEMORY_BUDGET`` if set, else 2 GiB.

    It is read from the environment on every call (so a test or a notebook can change it), but it
    never depends on the machine's free memory.
    """
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if text is None or not text.strip():
        return DEFAULT_MEMORY_BUDGET
    return max(MIN_BUDGET, _parse_bytes(text))


def resolve_memory_budget(memory_budget: int | float | None) -> int:
    """Return ``memory_budget`` in bytes, or the default when it is None."""
    if memory_budget is None:
        return default_memory_budget()
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | float):
        raise TypeError(f"memory_budget must be a number of bytes, got {memory_budget!r}.")
    if not math.isfinite(memory_budget) or memory_budget <= 0:
        raise ValueError(
            f"memory_budget must be a positive number of bytes, got {memory_budget!r}."
        )
    return max(MIN_BUDGET, int(memory_budget))


def tile_size(
    n_rows: int,
    bytes_per_row: int,
    memory_budget: int | float | None,
    *,
    minimum: int = 1,
) -> int:
    """Number of rows per tile so that ``rows * bytes_per_row`` fits the budget.

    Args:
        n_rows: total rows to cover (the result never exceeds it).
        bytes_per_row: memory one row of the tile costs, including temporaries.
        memory_budget: bytes, or None for :func:`default_memory_budget`.
        minimum: at least this many rows per tile, even if the budget is smaller.
    """
    budget = resolve_memory_budget(memory_budget)
    rows = budget // max(1, int(bytes_per_row))
    return int(max(minimum, min(n_rows, rows)))


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def tile_grid(
    n_rows: int,
    n_cols: int,
    bytes_per_entry: int,
    memory_budget: int | float | None,
    *,
    rows_hint: int = 1,
    min_cols: int = 1,
) -> tuple[int, int]:
    """``(rows, cols)`` of the tiles of an ``[n_rows, n_cols]`` block whose entries cost
    ``bytes_per_entry`` each (temporaries included), so that one tile fits the budget.

    Columns are sized first, so that ``min(n_rows, rows_hint)`` rows of them fit (at least
    ``min_cols``); then as many rows of that width as fit (at least one). Every tiled
    pairwise computation (kernel matvecs, neighbour search) sizes its tiles here.
    """
    cols = tile_size(
        n_cols, bytes_per_entry * min(n_rows, rows_hint), memory_budget, minimum=min_cols
    )
    rows = tile_size(n_rows, bytes_per_entry * cols, memory_budget)
    return rows, cols
