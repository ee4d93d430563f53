"""linearize: values, gradients, and full-batch training equal to gradient_descent_mse on the
empirical NTK; a wide network tracks the prediction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernelens.dynamics import gradient_descent_mse, linearize
from kernelens.experiments.dynamics._nets import ntk_mlp
from kernelens.ntk import empirical_ntk, vjp


def mlp(width=16, out=2):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, out)).double()


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


ARCHS = {
    "mlp": (mlp, lambda g: torch.randn(9, 3, generator=g, dtype=torch.float64)),
    "cnn": (lambda: SmallCNN().double(), lambda g: torch.randn(9, 1, 6, 6, generator=g).double()),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_value_and_gradient_at_init(arch):
    make, data = ARCHS[arch]
    torch.manual_seed(0)
    model = make()
    x = data(torch.Generator().manual_seed(1))
    lin = linearize(model)
    torch.testing.assert_close(lin(x), model(x), rtol=0, atol=0)
    # d <c, f_lin> / d theta = J^T c at theta0 (the engine's vjp)
    c = torch.randn(x.shape[0], 2, dtype=torch.float64)
    (lin(x) * c).sum().backward()
    ref = vjp(model, x, c)
    for name in lin.names:
        torch.testing.assert_close(lin.theta[lin._keys[name]].grad, ref[name])


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_full_batch_gd_equals_the_prediction(arch, momentum):
    make, data = ARCHS[arch]
    torch.manual_seed(0)
    model = make()
    g = torch.Generator().manual_seed(2)
    x, xt = data(g), data(g)
    y = torch.randn(x.shape[0], 2, generator=g, dtype=torch.float64)
    lin = linearize(model)
    k = empirical_ntk(model, x, output="full")
    kt = empirical_ntk(model, xt, x, output="full")
    lr, steps = 0.5, 30
    p = gradient_descent_mse(k, y, lr, discrete=True, momentum=momentum or None)
    f0, g0 = model(x).detach(), model(xt).detach()
    opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=momentum)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((lin(x) - y) ** 2).mean()).backward()
        opt.step()
    tr, te = p(steps, f0, g0, kt)
    torch.testing.assert_close(lin(x).detach(), tr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lin(xt).detach(), te, rtol=1e-10, atol=1e-12)


def test_linear_model_is_linear_in_parameters():
    torch.manual_seed(0)
    model = mlp()
    lin = linearize(model)
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        d = {k: torch.randn_like(v) for k, v in lin.theta.items()}
        for k, v in lin.theta.items():
            v.add_(d[k])
        a = lin(x)
        for k, v in lin.theta.items():
            v.add_(d[k])
        b = lin(x)
    torch.testing.assert_close(b - a, a - model(x), rtol=1e-10, atol=1e-12)
    assert sum(1 for _ in lin.parameters()) == len(list(model.parameters()))
    assert set(lin.state_dict()) >= {f"theta0__{k}" for k in lin.theta}


def test_rejects_random_modules():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    lin = linearize(model)  # the expansion point is the model in eval mode
    x = torch.randn(4, 3)
    torch.testing.assert_close(lin(x), model.eval()(x))
    with pytest.raises(TypeError, match="nn.Module"):
        linearize(lambda x: x)


def _ntk_mlp(width: int) -> nn.Module:
    return ntk_mlp(3, width, 1, depth=2, act=nn.Tanh, seed=0)


def _tracking_error(width: int, steps: int = 60, lr: float = 0.5) -> float:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1])
    model = _ntk_mlp(width)
    k = empirical_ntk(model, x, output="full")
    f0 = model(x).detach()
    pred = gradient_descent_mse(k, y, lr, discrete=True)(steps, f0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((model(x) - y) ** 2).mean()).backward()
        opt.step()
    moved = (pred - f0).norm()
    return float((model(x).detach() - pred).norm() / moved)


def test_wide_network_tracks_the_prediction():
    narrow, wide = _tracking_error(32), _tracking_error(1024)
    assert wide < 0.02
    assert wide < narrow


def test_double_backward_route_equals_forward_mode():
    """The fallback for ops without forward-mode AD gives the same product and gradient."""
    from torch.func import functional_call

    from kernelens.ntk._param_jvp import _by_double_backward, linear_jvp

    torch.manual_seed(0)
    model = mlp()
    x = torch.randn(6, 3, dtype=torch.float64)
    base = {n: p.detach() for n, p in model.named_parameters()}
    tan = {n: torch.randn_like(p, requires_grad=True) for n, p in base.items()}
    _, a = linear_jvp(model, x, base, tan)
    _, b = _by_double_backward(lambda s: functional_call(model, s, (x,)), base, tan)
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.sum(), list(tan.values()))
    gb = torch.autograd.grad(b.sum(), list(tan.values()))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)
