"""build(): the finite networks' empirical kernels converge to the analytic ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from infinite_limits import check_limit

import kernelens.infinite as inf
from kernelens.ntk import empirical_ntk


def _mlp(width, param="ntk", act=inf.Relu, depth=2):
    layers = []
    for _ in range(depth):
        layers += [inf.Dense(width, W_std=1.5, b_std=0.1, parameterization=param), act()]
    return inf.serial(*layers, inf.Dense(1, W_std=1.5, b_std=0.1, parameterization=param))


def _rel_ntk_error(net, x, seed):
    model = net.build(tuple(x.shape[1:]), seed=seed, dtype=torch.float64)
    emp = empirical_ntk(model, x, output="trace")
    exact = net.kernel(x, get="ntk")
    return float((emp - exact).norm() / exact.norm())


def _slope(widths, errors):
    return float(np.polyfit(np.log(widths), np.log(errors), 1)[0])


def _convergence(widths, seeds, n=6, param="ntk", depth=2):
    x = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    # root-mean-square over seeds: the squared error is an average of ~1 / width terms. Seeds
    # differ between widths: with shared seeds the first units of a wide network repeat those
    # of the narrow one (same random stream), which correlates the errors across widths
    errs = [
        float(
            np.sqrt(
                np.mean(
                    [
                        _rel_ntk_error(_mlp(w, param, depth=depth), x, 1000 * w + s) ** 2
                        for s in range(seeds)
                    ]
                )
            )
        )
        for w in widths
    ]
    return errs, _slope(widths, errs)


def test_ntk_converges_like_one_over_sqrt_width_fast():
    errs, slope = _convergence([64, 256, 1024], seeds=3)
    assert errs[-1] < errs[0]
    assert -0.8 <= slope <= -0.2, (errs, slope)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_ntk_converges_like_one_over_sqrt_width(param, depth):
    """Issue 11: log-log slope of ||Theta_w - Theta_inf|| / ||Theta_inf|| in [-0.65, -0.35]
    (root-mean-square over 24 seeds) for ReLU MLPs with 1 and 2 hidden layers."""
    widths = [256, 512, 1024, 2048, 4096]
    errs, slope = _convergence(widths, seeds=24, param=param, depth=depth)
    print(
        f"\n{param} depth {depth}: widths {widths} errors {np.round(errs, 4).tolist()} "
        f"slope {slope:.3f}"
    )
    assert -0.65 <= slope <= -0.35, (errs, slope)


ARCHS = {
    "cnn_same_flatten": (
        lambda w: inf.serial(
            inf.Conv(w, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), inf.Relu(),
            inf.Conv(w, (2, 2), strides=(2, 2), W_std=1.4), inf.Relu(), inf.Flatten(),
            inf.Dense(1, b_std=0.1),
        ),
        (2, 6, 6),
    ),
    "cnn_circular_gap_avgpool": (
        lambda w: inf.serial(
            inf.Conv(w, (3, 3), padding="CIRCULAR", b_std=0.2), inf.Gelu(),
            inf.AvgPool((2, 2), padding="SAME", normalize_edges=True),
            inf.Conv(w, (3,) * 2, padding="VALID", W_std=1.3, parameterization="standard"),
            inf.Erf(), inf.GlobalAvgPool(), inf.Dense(1),
        ),
        (2, 5, 5),
    ),
    "residual_layernorm_concat": (
        lambda w: inf.serial(
            inf.Dense(w, b_std=0.2), inf.LayerNorm(),
            inf.FanOut(2), inf.parallel(inf.serial(inf.Relu(), inf.Dense(w)), inf.Identity()),
            inf.FanInSum(), inf.FanOut(2),
            inf.parallel(inf.serial(inf.Erf(), inf.Dense(w)), inf.Dense(w // 2, b_std=0.3)),
            inf.FanInConcat(), inf.Dense(1),
        ),
        (4,),
    ),
    "conv1d": (
        lambda w: inf.serial(
            inf.Conv(w, (3,), strides=(2,), padding="SAME", b_std=0.1), inf.Abs(),
            inf.Flatten(), inf.Dense(1)
        ),
        (3, 7),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_architectures_converge(name):
    make, shape = ARCHS[name]
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    check_limit(make, x)


def test_build_is_deterministic_and_shapes():
    net = _mlp(16)
    a, b = net.build((5,), seed=3), net.build((5,), seed=3)
    x = torch.randn(7, 5)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert a(x).shape == (7, 1)
    assert not torch.equal(net.build((5,), seed=4)(x), a(x))
    assert a.layers[0].linear.weight.dtype == torch.get_default_dtype()
    n_params = sum(p.numel() for p in a.parameters())
    assert n_params == 5 * 16 + 16 + 16 * 16 + 16 + 16 + 1


def test_nngp_is_the_output_covariance_over_seeds():
    """A linear network's E[f(x) f(x')] is exactly its NNGP at any width: a z-test over seeds,
    and monte_carlo_kernel is that same average."""
    net = inf.serial(inf.Dense(8, W_std=1.2, b_std=0.5), inf.Dense(3, W_std=0.8, b_std=0.2))
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(3, 4, dtype=torch.float64, generator=g)
    x2 = torch.randn(2, 4, dtype=torch.float64, generator=g)
    xs = torch.cat([x1, x2])
    samples = []
    for s in range(1500):
        with torch.no_grad():
            f = net.build((4,), seed=s, dtype=torch.float64)(xs)
        samples.append(f[:3] @ f[3:].T / 3)
    samples = torch.stack(samples)
    exact = net.kernel(x1, x2, get="nngp")
    z = (samples.mean(0) - exact).abs() / (samples.std(0) / len(samples) ** 0.5)
    assert z.max() < 4.5, z
    mc = inf.monte_carlo_kernel(net, x1, x2, n_samples=20, get="nngp")
    torch.testing.assert_close(mc, samples[:20].mean(0), rtol=1e-12, atol=1e-14)


class TestDropout:
    def _net(self, mode, width=1024):
        return inf.serial(
            inf.Dense(width, W_std=1.3, b_std=0.2), inf.Relu(), inf.Dropout(0.6, mode=mode),
            inf.Dense(1, W_std=1.2),
        )  # fmt: skip

    def test_train_mode_masks_are_fixed_per_example_index(self):
        model = self._net("train", 32).build((3,), seed=0)
        x = torch.randn(5, 3)
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        # the same input at two indices gets two different masks
        twice = model(torch.cat([x[:1], x[:1]]))
        assert not torch.equal(twice[0], twice[1])
        mask = model.layers[2].mask
        assert mask.shape == (1024, 32)
        kept = (mask > 0).double().mean().item()
        assert abs(kept - 0.6) < 0.02
        torch.testing.assert_close(mask[mask > 0], torch.full_like(mask[mask > 0], 1 / 0.6))

    def test_train_mode_converges_over_mask_seeds(self):
        net = self._net("train")
        x1 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x2 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        for b in (None, x2):
            mc = inf.monte_carlo_kernel(net, x1, b, n_samples=24, get="ntk")
            exact = net.kernel(x1, b, get="ntk")
            assert (mc - exact).norm() < 0.03 * exact.norm(), (mc, exact)
        # the analytic train-mode kernel differs from test mode only on x = x'
        test = self._net("test").kernel(x1, get="ntk")
        train = net.kernel(x1, get="ntk")
        off = ~torch.eye(3, dtype=torch.bool)
        torch.testing.assert_close(train[off], test[off], rtol=1e-14, atol=0)
        assert torch.all(train.diagonal() > test.diagonal())

    def test_too_many_examples_raises(self):
        model = self._net("train", 4).build((3,), seed=0, dropout_examples=3)
        with pytest.raises(ValueError, match="dropout_examples"):
            model(torch.randn(4, 3))

    def test_test_mode_is_identity(self):
        model = self._net("test", 8).build((3,), seed=0)
        assert isinstance(model.layers[2], torch.nn.Identity)


def test_width_does_not_change_ntk_parameterised_kernel():
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(_mlp(8).kernel(x, get="ntk"), _mlp(4096).kernel(x, get="ntk"))
    assert math.isfinite(float(_mlp(8).kernel(x, get="ntk").sum()))
