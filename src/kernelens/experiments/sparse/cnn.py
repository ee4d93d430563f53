"""Shared pieces of the Sparse Kernel experiments: a small Fashion-MNIST CNN, its training,
per-layer features, and the readout heads the SK layer is compared with.

No experiment is registered here; :mod:`kernelens.experiments.sparse.fashion_mnist` uses these helpers.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...data import DataSplit, fashion_mnist
from ...kernels import KernelRidge
from ...sparse import SparseKernelLayer, median_neighbor_distance

__all__ = [
    "SmallCNN",
    "TrainedCNN",
    "accuracy",
    "batched",
    "fit_linear_head",
    "fit_mlp_head",
    "fit_sk_readout",
    "kernel_ridge_readout",
    "one_hot",
    "train_classifier",
    "trained_cnn",
]

#: Ridge of the SK readouts and exact KRR (Gaussian kernel values lie in [0, 1]).
READOUT_REG = 1e-3
#: Neighbours per query of the SK readouts.
READOUT_K = 32


class SmallCNN(nn.Module):
    """Two conv blocks (8 and 16 channels) and a 64-unit hidden layer before a linear head.

    ``trunk(x)`` maps images ``[B, 1, 28, 28]`` to features ``[B, 64]``; ``head`` is the
    linear readout ``[B, 64] -> [B, 10]``.
    """

    def __init__(self, n_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, width), nn.ReLU())
        self.head = nn.Linear(width, n_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, width]``."""
        return self.fc(self.block2(self.block1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate representation, flattened to ``[B, features]``."""
        b1 = self.block1(x)
        b2 = self.block2(b1)
        h = self.fc(b2)
        return {
            "input": x.flatten(1),
            "block1": b1.flatten(1),
            "block2": b2.flatten(1),
            "fc": h,
            "logits": self.head(h),
        }


def batched(fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, size: int = 1000):
    """``fn`` applied to ``X`` in chunks of ``size`` rows without autograd, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(X[i : i + size]) for i in range(0, len(X), size)])


def one_hot(y: torch.Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[N]`` int labels -> ``[N, n_classes]`` one-hot rows."""
    return nn.functional.one_hot(y, n_classes).to(dtype)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float((logits.argmax(dim=1) == y).to(torch.float64).mean())


def train_classifier(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> float:
    """Train ``model`` with Adam and cross-entropy on ``(X, y)``; returns seconds spent."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), batch_size):
            b = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(model(X[b]), y[b]).backward()
            opt.step()
    model.eval()
    return time.perf_counter() - t0


@dataclass
class TrainedCNN:
    """A trained :class:`SmallCNN` with the data it saw and what its training cost."""

    model: SmallCNN
    split: DataSplit
    epochs: int
    train_seconds: float
    test_accuracy: float


@functools.lru_cache(maxsize=2)
def trained_cnn(quick: bool) -> TrainedCNN:
    """The CNN every Sparse Kernel vision experiment starts from (trained once per process).

    Quick: 3000 training images, 4 epochs; full: 10000 images (the bundled subset, or the
    first 10000 of the full set), 10 epochs; Adam with learning rate 3e-3. Test sets: 1000 /
    2000 images.
    """
    split = fashion_mnist(n_train=3000 if quick else 10000, n_test=1000 if quick else 2000)
    torch.manual_seed(0)
    model = SmallCNN(n_classes=split.n_classes or 10)
    epochs = 4 if quick else 10
    seconds = train_classifier(model, split.X_train, split.y_train, epochs=epochs, lr=3e-3)
    acc = accuracy(batched(model, split.X_test), split.y_test)
    for p in model.parameters():
        p.requires_grad_(False)
    return TrainedCNN(model, split, epochs, seconds, acc)


# -- readout heads ------------------------------------------------------------------------------
def fit_linear_head(
    F: torch.Tensor, y: torch.Tensor, n_classes: int, *, iterations: int = 100
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Multinomial logistic regression on standardised features by full-batch L-BFGS (a
    linear probe / trained linear head). Returns ``(predict_logits, seconds)``."""
    t0 = time.perf_counter()
    mean, std = F.mean(0), F.std(0).clamp_min(1e-6)
    Fs = (F - mean) / std
    lin = nn.Linear(F.shape[1], n_classes)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")
    wd = 1e-4

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lin(Fs), y) + wd * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    seconds = time.perf_counter() - t0
    return (lambda Q: lin((Q - mean) / std)), seconds


def fit_mlp_head(
    F: torch.Tensor, y: torch.Tensor, n_classes: int, *, epochs: int = 20, seed: int = 0
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """A two-layer MLP head (128 hidden units) trained with Adam on standardised features."""
    torch.manual_seed(seed)
    mean, std = F.mean(0), F.std(0).clamp_min(1e-6)
    mlp = nn.Sequential(nn.Linear(F.shape[1], 128), nn.ReLU(), nn.Linear(128, n_classes))
    seconds = train_classifier(
        mlp, (F - mean) / std, y, epochs=epochs, batch_size=64, seed=seed, weight_decay=1e-4
    )
    return (lambda Q: mlp((Q - mean) / std)), seconds


def fit_sk_readout(
    F: torch.Tensor, y: torch.Tensor, n_classes: int, *, k: int = READOUT_K, **layer_kwargs
) -> tuple[SparseKernelLayer, float]:
    """A training-free SK readout: centers = labelled features, targets = one-hot labels,
    Gaussian kernel with the median k-th-neighbour distance as bandwidth. Returns the layer
    and the seconds its construction took (bandwidth heuristic + index build)."""
    t0 = time.perf_counter()
    k = min(k, len(F))
    bw = median_neighbor_distance(F, min(k, len(F) - 1))
    layer = SparseKernelLayer(
        F, one_hot(y, n_classes, F.dtype), k=k, bandwidth=bw, reg=READOUT_REG, **layer_kwargs
    )
    layer.center_features()  # builds the index now, so the cost is counted here
    return layer, time.perf_counter() - t0


def kernel_ridge_readout(
    F: torch.Tensor, y: torch.Tensor, n_classes: int, bandwidth: float
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Exact (dense) Gaussian kernel ridge regression on one-hot targets, float64."""
    t0 = time.perf_counter()
    krr = KernelRidge("gaussian", bandwidth=bandwidth, alpha=READOUT_REG)
    krr.fit(F.double().numpy(), one_hot(y, n_classes, torch.float64).numpy())
    seconds = time.perf_counter() - t0
    return (lambda Q: torch.from_numpy(krr.predict(Q.double().numpy()))), seconds
