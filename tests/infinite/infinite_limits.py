"""A shared check that a description's analytic NTK is the limit of its built networks."""

from __future__ import annotations

import torch

from kernelens.ntk import empirical_ntk


def check_limit(make, x, *, width=256, seeds=6, bias_tol=0.04, z_max=4.5):
    """Empirical NTKs of ``seeds`` built networks of ``width``: their mean must match the
    analytic NTK (relative error of the mean below ``bias_tol`` and every entry within
    ``z_max`` standard errors), and a 16x narrower network must be visibly noisier (the
    1 / sqrt(width) law predicts 4x)."""
    net = make(width)
    exact = net.kernel(x, get="ntk")
    shape = tuple(x.shape[1:])

    def samples(n, w_net):
        return torch.stack([
            empirical_ntk(w_net.build(shape, seed=s, dtype=torch.float64), x, output="trace")
            for s in range(n)
        ])  # fmt: skip

    emp = samples(seeds, net)
    mean, se = emp.mean(0), emp.std(0) / seeds**0.5
    rel_mean = float((mean - exact).norm() / exact.norm())
    z = float(((mean - exact).abs() / (se + 1e-12 * exact.abs().max())).max())
    assert rel_mean < bias_tol and z < z_max, (rel_mean, z)
    narrow = make(max(1, width // 16))
    spread_wide = float((emp - exact).norm(dim=(1, 2)).mean() / exact.norm())
    exact_n = narrow.kernel(x, get="ntk")
    spread_narrow = float((samples(seeds, narrow) - exact_n).norm(dim=(1, 2)).mean()
                          / exact_n.norm())  # fmt: skip
    assert spread_wide < spread_narrow / 2, (spread_narrow, spread_wide)
