"""Memory budgets and tile sizes for computations that must not form large matrices."""

from __future__ import annotations

import math

import torch

__all__ = [
    "available_memory",
    "default_memory_budget",
    "element_size",
    "resolve_memory_budget",
    "tile_size",
]

#: Fraction of currently available RAM used when the caller sets no budget.
DEFAULT_BUDGET_FRACTION = 0.25
#: Floor so tiny budgets still make progress (bytes).
MIN_BUDGET = 1 << 20


def available_memory() -> int:
    """Available RAM in bytes (``MemAvailable`` from /proc/meminfo; 4 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def default_memory_budget() -> int:
    """A safe default budget: a quarter of the RAM that is free now."""
    return max(MIN_BUDGET, int(available_memory() * DEFAULT_BUDGET_FRACTION))


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
