"""Frozen feature extractors for the Sparse Kernel readout experiments: the small CNN of
:mod:`.cnn` and a small vision transformer, each trained once per seed (cached in memory for
the process, never on disk), with the penultimate features of their training and test images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ...data import fashion_mnist
from .cnn import SmallCNN, accuracy, batched, train_classifier

__all__ = ["BACKBONES", "BackboneFeatures", "SmallViT", "backbone_features"]


class SmallViT(nn.Module):
    """A small vision transformer for ``[B, 1, 28, 28]`` images, written with ``torch.nn``.

    7x7 patches (16 tokens) are embedded linearly to ``dim``, a learned position embedding and
    a class token are added, ``depth`` pre-norm transformer blocks (``heads`` heads, MLP
    ``2 dim``, no dropout) follow, and ``trunk(x)`` returns the normalised class token
    ``[B, dim]``; ``head`` is the linear readout ``[B, dim] -> [B, n_classes]``.
    """

    def __init__(
        self, n_classes: int = 10, *, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 7
    ) -> None:
        super().__init__()
        if 28 % patch:
            raise ValueError(f"patch must divide 28, got {patch}.")
        n_tokens = (28 // patch) ** 2
        self.embed = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + 1, dim))
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token features ``[B, dim]``."""
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # [B, T, dim]
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.norm(self.blocks(tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


#: name -> (constructor, epochs in full mode, learning rate)
BACKBONES = {"cnn": (SmallCNN, 8, 3e-3), "vit": (SmallViT, 8, 1e-3)}


@dataclass
class BackboneFeatures:
    """Frozen penultimate features of one trained backbone.

    ``F_train [n, p]`` / ``F_test [t, p]`` with labels ``y_train [n]`` / ``y_test [t]``;
    ``test_logits [t, C]`` are the backbone's own head's outputs; ``model`` is the trained
    backbone with gradients switched off (copy it before fine-tuning).
    """

    model: nn.Module
    name: str
    seed: int
    F_train: torch.Tensor
    y_train: torch.Tensor
    F_test: torch.Tensor
    y_test: torch.Tensor
    test_logits: torch.Tensor
    head_accuracy: float
    epochs: int
    train_seconds: float


@functools.lru_cache(maxsize=12)
def backbone_features(
    name: str, seed: int, *, n_train: int, n_test: int, epochs: int | None = None
) -> BackboneFeatures:
    """Train backbone ``name`` (``"cnn"`` or ``"vit"``) with Adam on the first ``n_train``
    Fashion-MNIST training images, initialisation and batch order from ``seed``, and return
    its frozen features (trained once per process and arguments; kept in memory only).

    ``epochs`` defaults to the backbone's full-mode count in :data:`BACKBONES`.
    """
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {sorted(BACKBONES)}, got {name!r}.")
    make, default_epochs, lr = BACKBONES[name]
    epochs = default_epochs if epochs is None else epochs
    split = fashion_mnist(n_train=n_train, n_test=n_test)
    torch.manual_seed(seed)
    model = make(n_classes=split.n_classes or 10)
    seconds = train_classifier(model, split.X_train, split.y_train, epochs=epochs, lr=lr, seed=seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    logits = batched(model, split.X_test)
    return BackboneFeatures(
        model=model,
        name=name,
        seed=seed,
        F_train=batched(model.trunk, split.X_train),
        y_train=split.y_train,
        F_test=batched(model.trunk, split.X_test),
        y_test=split.y_test,
        test_logits=logits,
        head_accuracy=accuracy(logits, split.y_test),
        epochs=epochs,
        train_seconds=seconds,
    )
