"""Record a training run step by step: :class:`TrajectoryRecorder` and :func:`fit`."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._progress import progress
from .._validation import check_positive, check_positive_int
from ..ntk import vjp
from .losses import LossSpec, loss_output_gradients, resolve_loss
from .optim import (
    capture_preconditioners,
    capture_rules,
    forward_update,
    gradient_tolerance,
    optimizer_kind,
    roundoff_tolerance,
)
from .trajectory import (
    DEFAULT_SHARD_BYTES,
    StepRecord,
    Trajectory,
    TrajectoryHeader,
    TrajectoryWriter,
    open_writer,
)

__all__ = ["TrajectoryRecorder", "fit"]

#: Learning-rate schedulers the recorder steps after every optimizer step.
Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def _check_deterministic(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if not m.training:
            continue
        label = f"module {name or '<root>'!r} ({type(m).__name__})"
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise ValueError(
                f"{label} is in training mode: the EPK needs each example's output to be a fixed "
                "function of the weights; call model.eval() before recording (or drop Dropout)."
            )
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"{label} is in training mode: batch statistics couple the examples of a batch, "
                "so per-example gradients are not defined; call model.eval() (running "
                "statistics) or use LayerNorm/GroupNorm."
            )


def _digest(t: torch.Tensor) -> bytes:
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=12).digest()


class TrajectoryRecorder:
    """Trains ``model`` one step at a time and records what the Exact Path Kernel needs.

    ``rec.step(x_batch, y_batch, indices)`` does one training step — forward, batch-mean loss,
    backward, ``optimizer.step()``, ``scheduler.step()`` — and records the weights after it,
    the batch and its per-example ``d loss / d output``, the optimizer's per-step scalars (and
    Adam's denominators). ``rec.trajectory`` is the :class:`Trajectory` so far.

    Args:
        model: the network; its output for a batch ``[B, ...]`` must be ``[B, O]``. Put it in
            eval mode if it has Dropout or BatchNorm (the EPK needs per-example outputs that
            depend on the weights only).
        optimizer: a fresh (never stepped) ``torch.optim.SGD``, ``Adam`` or ``AdamW`` over
            parameters of ``model``; parameters not in it are recorded as static.
        loss: ``"cross_entropy"`` (targets: class indices ``[B]``), ``"mse"`` (targets like
            the output) or a per-example callable ``(outputs [B, O], targets) -> [B]``; the
            optimized loss is the batch mean.
        num_examples: ``N``; ``indices`` passed to :meth:`step` lie in ``[0, N)``.
        store: None to keep the trajectory in memory, or a new directory to stream it to disk.
        scheduler: optional learning-rate scheduler, stepped after every optimizer step.
        check_updates: compare every actual step with the recorded update law (cheap; catches
            an optimizer that behaves differently from its recorded description).
        shard_bytes: target size of one store file when ``store`` is a directory.
        max_grad_norm: clip the gradients to this total norm before each step
            (``torch.nn.utils.clip_grad_norm_`` over all trained parameters). The one scalar
            rescale per step is recorded (``StepRecord.grad_scale``), so attributions stay
            exact. Clipping in a step pre-hook is recorded the same way; any per-element change
            of the gradients (tensor hooks, ``clip_grad_value_``) is refused.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
        *,
        num_examples: int,
        store: str | os.PathLike | None = None,
        scheduler: Scheduler | None = None,
        check_updates: bool = True,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        max_grad_norm: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.optimizer = optimizer
        self.kind = optimizer_kind(optimizer)
        if any(len(st) for st in optimizer.state.values()):
            raise ValueError(
                "the optimizer already has state (it has taken steps); create the recorder "
                "with a fresh optimizer before the first training step."
            )
        self.loss: LossSpec = resolve_loss(loss)
        self.num_examples = check_positive_int(num_examples, "num_examples")
        self.scheduler = scheduler
        self.check_updates = bool(check_updates)
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive(max_grad_norm, "max_grad_norm")
        )
        self.shard_bytes = check_positive_int(shard_bytes, "shard_bytes")
        self.store = None if store is None else Path(store)
        if (
            self.store is not None
            and self.store.exists()
            and (not self.store.is_dir() or any(self.store.iterdir()))
        ):
            raise FileExistsError(
                f"store {str(self.store)!r} already exists and is not empty; pass a new directory."
            )
        _check_deterministic(model)

        names = {id(p): n for n, p in model.named_parameters()}
        self._params: dict[str, nn.Parameter] = {}
        self._group_of: dict[str, int] = {}
        for k, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                if id(p) not in names:
                    raise ValueError(
                        f"optimizer param group {k} holds a tensor of shape {tuple(p.shape)} "
                        "that is not a parameter of model; build the optimizer from "
                        "model.parameters()."
                    )
                if not p.requires_grad:
                    raise ValueError(
                        f"parameter {names[id(p)]!r} is in the optimizer but has "
                        "requires_grad=False; remove frozen parameters from the optimizer."
                    )
                self._params[names[id(p)]] = p
                self._group_of[names[id(p)]] = k
        self._static = {
            n: t.detach().clone() for n, t in model.named_parameters() if n not in self._params
        }
        self._static.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self._w = {n: p.detach().clone() for n, p in self._params.items()}
        self._header: TrajectoryHeader | None = None
        self._writer: TrajectoryWriter | None = None
        self._seen: dict[int, bytes] = {}
        self._check_buffers: dict[str, torch.Tensor] = {}
        self._steps = 0

    @property
    def num_steps(self) -> int:
        """Steps recorded so far."""
        return self._steps

    # ------------------------------------------------------------------ one step
    def step(self, x_batch: Any, y_batch: Any, indices: Any) -> float:
        """One training step on the batch; returns the batch-mean loss.

        Args:
            x_batch: ``[B, ...]`` inputs.
            y_batch: ``[B]`` or ``[B, O]`` targets (see ``loss``).
            indices: ``[B]`` the batch's training-example indices in ``[0, num_examples)``;
                an index must always come with the same input.
        """
        x, y, idx = self._check_batch(x_batch, y_batch, indices)
        self._check_unchanged()
        out = self.model(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(idx):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the model must return a [B, O] tensor for a batch of B={len(idx)}, got {shape}; "
                "reshape a scalar output to [B, 1]."
            )
        self._start(out.shape[1], out.dtype)
        if out.shape[1] != self._header.num_outputs:
            raise ValueError(
                f"the model returned {out.shape[1]} outputs, earlier steps had "
                f"{self._header.num_outputs}."
            )
        losses, c = loss_output_gradients(self.loss, out, y)
        if not bool(torch.isfinite(losses).all()):
            bad = idx[~torch.isfinite(losses.detach())].tolist()
            raise FloatingPointError(
                f"the loss is NaN or Inf at step {self._steps} for training example(s) {bad[:10]}; "
                "training diverged (lower the learning rate). The trajectory up to the previous "
                "step is intact and the model was not updated."
            )
        batch_loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        self._check_grads()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self._params.values()), self.max_grad_norm)
        implied = vjp(self.model, x, c / len(idx), weights=self._w, params=list(self._params))
        rules, hyper = capture_rules(self.optimizer, self.kind)
        self.optimizer.step()
        # after the step: p.grad is what the optimizer used, step pre-hooks included
        grad_scale = self._grad_scale(implied)
        pre = None
        if self.kind == "adam":
            pre = {n: d.detach().clone() for n, d in
                   capture_preconditioners(self.optimizer, self._params).items()}  # fmt: skip
        w_next = {n: p.detach().clone() for n, p in self._params.items()}
        if self.check_updates:
            self._check_update(rules, pre, w_next)
        record = StepRecord(
            step=self._steps,
            indices=idx.cpu(),
            inputs=x.detach().cpu().clone(),
            targets=y.detach().cpu().clone(),
            outputs=out.detach().cpu().clone(),
            output_grads=c.cpu(),
            loss=float(batch_loss.detach()),
            grad_scale=grad_scale,
            rules=tuple(rules),
            hyper=tuple(hyper),
            preconditioners=pre,
        )
        self._writer.append(record, w_next)
        self._w = w_next
        self._steps += 1
        if self.scheduler is not None:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(record.loss)
            else:
                self.scheduler.step()
        return record.loss

    def _check_batch(
        self, x_batch: Any, y_batch: Any, indices: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x_batch)
        y = torch.as_tensor(y_batch)
        idx = torch.as_tensor(indices)
        if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(
                f"indices must be a 1-D integer tensor [B], got {idx.dtype} of shape "
                f"{tuple(idx.shape)}."
            )
        idx = idx.long()
        b = idx.shape[0]
        if b == 0:
            raise ValueError("the batch is empty; pass at least one example.")
        for name, t in (("x_batch", x), ("y_batch", y)):
            if t.ndim == 0 or t.shape[0] != b:
                raise ValueError(
                    f"{name} has {t.shape[0] if t.ndim else 0} rows but indices has {b}; they "
                    "must describe the same batch."
                )
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_examples:
            raise ValueError(
                f"indices must lie in [0, num_examples={self.num_examples}), got values in "
                f"[{int(idx.min())}, {int(idx.max())}]."
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("x_batch contains NaN or Inf; clean the inputs before training.")
        for j, i in enumerate(idx.tolist()):
            d = _digest(x[j])
            if self._seen.setdefault(i, d) != d:
                raise ValueError(
                    f"training example {i} arrived with a different input than at an earlier "
                    "step; indices must identify examples (use the dataset position)."
                )
        return x, y, idx

    def _check_unchanged(self) -> None:
        for n, p in self._params.items():
            if not torch.equal(p.detach(), self._w[n]):
                raise RuntimeError(
                    f"parameter {n!r} changed outside the recorder after step {self._steps - 1}; "
                    "every update must go through rec.step() for the trajectory to be exact."
                )
        state = dict(self.model.named_parameters())
        state.update(dict(self.model.named_buffers()))
        for n, t in self._static.items():
            if n not in state or not torch.equal(state[n].detach(), t):
                raise RuntimeError(
                    f"static tensor {n!r} (a frozen parameter or buffer) changed during "
                    "recording; the model must stay fixed apart from the optimized parameters."
                )

    def _check_grads(self) -> None:
        for n, p in self._params.items():
            if p.grad is None:
                raise RuntimeError(
                    f"parameter {n!r} received no gradient at step {self._steps} (unused in the "
                    "forward pass?); remove it from the optimizer."
                )
            if not bool(torch.isfinite(p.grad).all()):
                raise FloatingPointError(
                    f"the gradient of {n!r} is NaN or Inf at step {self._steps}; training "
                    "diverged. The trajectory up to the previous step is intact."
                )

    def _grad_scale(self, implied: dict[str, torch.Tensor]) -> float:
        """The one scalar ``s`` with ``p.grad = s * e`` for every trained parameter, where ``e``
        is the gradient implied by the recorded loss gradients (an independent backward pass
        that no hook sees); ``1.0`` unless the gradients were rescaled (``clip_grad_norm_``).

        Raises RuntimeError if the optimizer used anything else (a gradient hook, value
        clipping, a step pre-hook that edits gradients per element): the recorded loss
        gradients would not explain the step, so attributions would be wrong.
        """
        missing = [n for n, p in self._params.items() if p.grad is None]
        if missing:
            raise RuntimeError(
                f"at step {self._steps} the gradient of {missing[0]!r} was removed before the "
                "optimizer step (a step pre-hook set p.grad = None?); the EPK needs every trained "
                "parameter updated from its recorded gradient."
            )
        grads = {n: p.grad.detach().double() for n, p in self._params.items()}
        e = {n: implied[n].detach().double() for n in self._params}
        ee = sum(float((v * v).sum()) for v in e.values())
        ge = sum(float((grads[n] * e[n]).sum()) for n in e)
        scale = ge / ee if ee > 0 else 1.0
        g_dtype = next(iter(self._params.values())).dtype
        if abs(scale - 1.0) <= gradient_tolerance(1.0, 0.0, g_dtype):
            scale = 1.0
        g_all = max((float(g.abs().max()) for g in grads.values() if g.numel()), default=0.0)
        for n, g in grads.items():
            if not g.numel():
                continue
            err = float((g - scale * e[n]).abs().max())
            tol = gradient_tolerance(float(g.abs().max()), g_all, g_dtype)
            if err > tol:
                raise RuntimeError(
                    f"at step {self._steps} the gradient the optimizer used for {n!r} is not "
                    "the gradient of the recorded losses (max deviation "
                    f"{err:.3g}, {err / max(float(g.abs().max()), 1e-300):.3g} relative, after "
                    f"the best common rescaling {scale:.6g}): something changed the gradients "
                    "per element (a tensor hook on a parameter, clip_grad_value_, a step "
                    "pre-hook that edits gradients). The EPK supports only one common rescale "
                    "of all gradients per step (clip_grad_norm_ over all trained parameters; "
                    "or pass max_grad_norm=). The model was updated by this step but it was not "
                    "recorded: start a new recording without the gradient change."
                )
        return float(scale)

    def _check_update(
        self,
        rules: list,
        pre: dict[str, torch.Tensor] | None,
        w_next: dict[str, torch.Tensor],
    ) -> None:
        direction = {}
        for n, p in self._params.items():
            r = rules[self._group_of[n]]
            direction[n] = p.grad.detach().double() + r.l2 * self._w[n].double()
        update = forward_update(rules, self._group_of, self._check_buffers, direction, pre)
        for n in self._params:
            r = rules[self._group_of[n]]
            w0, w1 = self._w[n].double(), w_next[n].double()
            predicted = update[n] - r.decoupled * w0
            actual = w1 - w0
            if not actual.numel():
                continue
            err = float((predicted - actual).abs().max())
            scale = float(actual.abs().max())
            wmax = max(float(w0.abs().max()), float(w1.abs().max()))
            if err > roundoff_tolerance(scale, wmax, self._w[n].dtype):
                raise RuntimeError(
                    f"the optimizer's step {self._steps} on {n!r} deviates from the recorded "
                    f"update law by {err:.3g} (step size {scale:.3g}); something changed the "
                    "gradients or the step (a gradient hook? a patched optimizer?). Supported "
                    "optimizers are plain torch.optim.SGD / Adam / AdamW."
                )

    # ------------------------------------------------------------------ output
    def _start(self, num_outputs: int, dtype: torch.dtype) -> None:
        if self._header is not None:
            return
        params = tuple(
            (n, tuple(p.shape), str(p.dtype), self._group_of[n]) for n, p in self._params.items()
        )
        static = tuple((n, tuple(t.shape), str(t.dtype)) for n, t in self._static.items())
        self._header = TrajectoryHeader(
            params=params,
            static=static,
            optimizer=self.kind,
            optimizer_class=type(self.optimizer).__name__,
            loss=self.loss.name,
            num_examples=self.num_examples,
            num_outputs=int(num_outputs),
            run_id=uuid.uuid4().hex,
        )
        self._writer = open_writer(
            self.store, self._header, self._static, self._w, shard_bytes=self.shard_bytes
        )

    @property
    def trajectory(self) -> Trajectory:
        """The :class:`Trajectory` recorded so far (on disk: pending steps are written first)."""
        if self._header is None:
            raise RuntimeError("no training step has been recorded yet; call rec.step() first.")
        return self._writer.trajectory(self.model)


def fit(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    seed: int = 0,
    scheduler: Scheduler | None = None,
    store: str | os.PathLike | None = None,
    max_grad_norm: float | None = None,
) -> Trajectory:
    """Train ``model`` on ``(X, y)`` with shuffled mini-batches and return the recorded trajectory.

    Each epoch visits every example once in a random order drawn from ``seed`` (the last batch
    may be smaller). Example ``i`` is row ``i`` of ``X``.

    Args:
        model: the network (``[B, ...] -> [B, O]``).
        X: ``[N, ...]`` training inputs.
        y: ``[N]`` class indices (cross-entropy) or ``[N]`` / ``[N, O]`` targets (MSE).
        optimizer: fresh SGD / Adam / AdamW over ``model``'s parameters.
        epochs, batch_size: the schedule; ``scheduler`` is stepped after every step.
        loss: see :class:`TrajectoryRecorder`.
        seed: seed of the shuffling.
        store: None (memory) or a new directory to stream the trajectory to.
        max_grad_norm: clip the gradients' total norm before each step (recorded exactly).
    """
    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows, got shapes {tuple(X.shape)} and "
            f"{tuple(y.shape)}."
        )
    n = X.shape[0]
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    rec = TrajectoryRecorder(
        model,
        optimizer,
        loss,
        num_examples=n,
        store=store,
        scheduler=scheduler,
        max_grad_norm=max_grad_norm,
    )
    gen = torch.Generator().manual_seed(int(seed))
    per_epoch = -(-n // batch_size)
    batches = (
        perm[k : k + batch_size]
        for _ in range(epochs)
        for perm in [torch.randperm(n, generator=gen)]
        for k in range(0, n, batch_size)
    )
    for idx in progress(batches, total=epochs * per_epoch, desc="epk.fit"):
        rec.step(X[idx], y[idx], idx)
    return rec.trajectory
