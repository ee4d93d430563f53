"""The symmetric Gram of the full and trace NTK (x2 = None) against a plain product."""

import pytest
import torch
from torch import nn

from kernelens.ntk import empirical_ntk
from kernelens.ntk.factors import SELF_GRAM_ROWS, _gram


@pytest.mark.parametrize("m", [SELF_GRAM_ROWS - 1, 2 * SELF_GRAM_ROWS, 3 * SELF_GRAM_ROWS + 7])
def test_self_gram_matches_product_and_is_symmetric(m):
    a = torch.randn(m, 37, dtype=torch.float64)
    g = _gram(a, a)
    torch.testing.assert_close(g, a @ a.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g.T, rtol=1e-12, atol=1e-12)


def test_self_gram_of_other_operand_is_the_plain_product():
    a, b = torch.randn(300, 5), torch.randn(260, 5)
    assert torch.equal(_gram(a, b), a @ b.T)


@pytest.mark.parametrize("output", ["full", "trace"])
def test_blocked_self_kernel_equals_the_cross_kernel(output):
    """x2 = None (blocked symmetric Grams: N * O = 400 rows) against x2 = x (plain Grams)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    k_self = empirical_ntk(model, x, output=output)
    k_cross = empirical_ntk(model, x, x.clone(), output=output)
    torch.testing.assert_close(k_self, k_cross, rtol=1e-12, atol=1e-12)
