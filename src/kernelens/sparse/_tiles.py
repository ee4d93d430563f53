"""Tile sizes that skip the free-memory lookup when a whole computation is tiny."""

from __future__ import annotations

from .._memory import MIN_BUDGET, tile_size

__all__ = ["rows_per_tile"]


def rows_per_tile(
    n_rows: int, bytes_per_row: int, memory_budget: int | float | None, *, minimum: int = 1
) -> int:
    """:func:`kernelens._memory.tile_size`, answered without resolving the budget when
    all rows fit the smallest budget any setting can give (small layers call this per step)."""
    if n_rows * bytes_per_row <= MIN_BUDGET:
        return max(minimum, n_rows)
    return tile_size(n_rows, bytes_per_row, memory_budget, minimum=minimum)
