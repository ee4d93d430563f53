"""Training losses the trajectory recorder understands, as per-example losses.

The EPK needs, for every training example ``i`` at every step, the gradient of the example's
loss with respect to the network output, ``c_i = d loss_i / d f(x_i)`` ``[O]``. A loss is
therefore given as a *per-example* function ``(outputs [B, O], targets) -> [B]``; the batch
loss the optimizer minimises is its mean. Each example's loss must depend on its own output
row only (true for every loss below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "LossSpec", "loss_output_gradients", "resolve_loss"]

PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A per-example training loss.

    Attributes:
        name: ``"cross_entropy"``, ``"mse"`` or ``"callable"``.
        per_example: ``(outputs [B, O], targets) -> losses [B]``.
    """

    name: str
    per_example: PerExampleLoss

    @property
    def has_log_prob_view(self) -> bool:
        """Whether the network can be read as log-probabilities with a constant dL/df.

        True for cross-entropy with class-index targets: on ``log_softmax`` outputs the
        per-example loss is ``-log p_y``, whose output gradient ``-onehot(y)`` never changes.
        """
        return self.name == "cross_entropy"


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.ndim != 1 or targets.dtype not in (torch.int64, torch.int32, torch.int16):
        raise ValueError(
            "loss='cross_entropy' needs integer class indices of shape [B], got "
            f"{targets.dtype} targets of shape {tuple(targets.shape)}; pass labels as a "
            "LongTensor (soft labels are not supported)."
        )
    n_classes = outputs.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ValueError(
            f"cross_entropy targets must lie in [0, {n_classes}) for a model with "
            f"{n_classes} outputs; got values in [{int(targets.min())}, {int(targets.max())}]."
        )
    return F.cross_entropy(outputs, targets.long(), reduction="none")


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if not targets.is_floating_point():
        raise ValueError(f"loss='mse' needs floating targets, got dtype {targets.dtype}.")
    if targets.ndim == 1 and outputs.shape[1] == 1:
        targets = targets.unsqueeze(1)
    if targets.shape != outputs.shape:
        raise ValueError(
            f"loss='mse' needs targets of shape {tuple(outputs.shape)} (like the model "
            f"output), got {tuple(targets.shape)}."
        )
    return (outputs - targets.to(outputs.dtype)).pow(2).mean(dim=1)


#: Built-in losses. ``mse`` averages over outputs, so its batch mean equals
#: ``torch.nn.MSELoss()``; ``cross_entropy`` equals ``torch.nn.CrossEntropyLoss()``.
LOSSES: dict[str, PerExampleLoss] = {"cross_entropy": _cross_entropy, "mse": _mse}


def resolve_loss(loss: str | PerExampleLoss) -> LossSpec:
    """Turn ``"cross_entropy"``, ``"mse"`` or a per-example callable into a :class:`LossSpec`."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}; valid options are 'cross_entropy', 'mse' or a callable "
                "(outputs [B, O], targets) -> per-example losses [B]."
            )
        return LossSpec(loss, LOSSES[loss])
    if callable(loss):
        return LossSpec("callable", loss)
    raise TypeError(
        f"loss must be 'cross_entropy', 'mse' or a callable, got {type(loss).__name__}."
    )


def loss_output_gradients(
    spec: LossSpec, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses ``[B]`` (attached to the graph) and ``c = dloss_i/df(x_i)`` ``[B, O]``.

    ``outputs`` must require grad (it is the model's output inside the training step).
    """
    losses = spec.per_example(outputs, targets)
    if not isinstance(losses, torch.Tensor) or losses.shape != (outputs.shape[0],):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses)
        raise ValueError(
            f"the loss must return one value per example, shape [{outputs.shape[0]}], got "
            f"{shape}; use reduction='none'."
        )
    (grads,) = torch.autograd.grad(losses.sum(), outputs, retain_graph=True)
    return losses, grads.detach()
