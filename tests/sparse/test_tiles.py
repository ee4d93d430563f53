"""kernelens._memory.tile_grid: the one home of two-level tile sizes (sparse search and scan,
linalg's kernel products)."""

from __future__ import annotations

import pytest

from kernelens._memory import MIN_BUDGET, tile_grid


@pytest.mark.parametrize("n_rows,n_cols,per_entry,hint", [(10_000, 50_000, 24, 1024), (7, 3, 8, 1)])
def test_tiles_fit_the_budget_and_cover_the_block(n_rows, n_cols, per_entry, hint):
    budget = 4 * MIN_BUDGET
    rows, cols = tile_grid(n_rows, n_cols, per_entry, budget, rows_hint=hint)
    assert 1 <= rows <= n_rows and 1 <= cols <= n_cols
    assert rows * cols * per_entry <= budget or (rows == 1 and cols == 1)
    if n_rows * n_cols * per_entry <= budget:
        assert (rows, cols) == (n_rows, n_cols)


def test_minimum_columns_win_over_the_budget():
    rows, cols = tile_grid(100, 10_000, 1 << 20, MIN_BUDGET, min_cols=32)
    assert cols == 32 and rows == 1
