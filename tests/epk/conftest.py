"""Small models and trajectories shared by the EPK tests (float64 unless stated)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from kernelens.epk import Trajectory, fit


def tanh_mlp(d_in: int = 2, hidden: int = 6, d_out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).double()


def toy_data(n: int = 12, d_in: int = 2, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


OPTIMIZERS: dict[str, Callable] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.3),
    "sgd_wd": lambda p: torch.optim.SGD(p, lr=0.3, weight_decay=0.05),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=0.01),
    "dampening": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.7, dampening=0.4),
    "nesterov": lambda p: torch.optim.SGD(
        p, lr=0.2, momentum=0.8, nesterov=True, weight_decay=0.02
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), weight_decay=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    "amsgrad": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, amsgrad=True),
}


def train(
    opt_name: str,
    *,
    loss: str = "cross_entropy",
    epochs: int = 2,
    batch_size: int = 5,
    model: nn.Module | None = None,
    seed: int = 0,
) -> Trajectory:
    torch.manual_seed(seed)
    model = tanh_mlp() if model is None else model
    X, y = toy_data()
    if loss == "mse":
        y = torch.nn.functional.one_hot(y, 3).double()
    return fit(
        model,
        X,
        y,
        optimizer=OPTIMIZERS[opt_name](model.parameters()),
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        seed=seed,
    )


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one thread avoids synchronisation overhead on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(OPTIMIZERS))
def opt_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(name="train")
def _train_fixture() -> Callable[..., Trajectory]:
    return train


@pytest.fixture(name="tanh_mlp")
def _tanh_mlp_fixture() -> Callable[..., nn.Module]:
    return tanh_mlp


@pytest.fixture(name="toy_data")
def _toy_data_fixture() -> Callable:
    return toy_data


@pytest.fixture
def x_test() -> torch.Tensor:
    return torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
