"""A recorded training run: weights at every step, the batches, and the optimizer's scalars.

A :class:`Trajectory` lives in memory (as recorded by ``TrajectoryRecorder(store=None)``) or on
disk (``store=path`` or :meth:`Trajectory.load`); both expose the same step-by-step access, so
long runs stream from disk and never need to fit in RAM. See :mod:`kernelens.epk.store` for the
file format.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .optim import StepRule
from .store import (
    FORMAT,
    VERSION,
    ShardReader,
    StoreError,
    read_manifest,
    replace_directory,
    write_manifest,
    write_shard,
)

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "StepRecord",
    "Trajectory",
    "TrajectoryHeader",
    "TrajectoryWriter",
    "open_writer",
]

#: Target size of one steps file; a file holds as many whole steps as fit.
DEFAULT_SHARD_BYTES = 256 << 20


@dataclass(frozen=True)
class TrajectoryHeader:
    """What a trajectory was recorded from (everything but the per-step data).

    Attributes:
        params: ``(name, shape, dtype, group)`` of each trained parameter, in optimizer order.
        static: ``(name, shape, dtype)`` of the frozen parameters and buffers.
        optimizer: ``"sgd"`` or ``"adam"``; ``optimizer_class`` the torch class name.
        loss: ``"cross_entropy"``, ``"mse"`` or ``"callable"``.
        num_examples: ``N``, the size of the index space of training examples.
        num_outputs: ``O``, the model's output width.
        run_id: a random id of the recording; every store file carries it.
    """

    params: tuple[tuple[str, tuple[int, ...], str, int], ...]
    static: tuple[tuple[str, tuple[int, ...], str], ...]
    optimizer: str
    optimizer_class: str
    loss: str
    num_examples: int
    num_outputs: int
    run_id: str

    @property
    def names(self) -> list[str]:
        return [p[0] for p in self.params]

    @property
    def group_of(self) -> dict[str, int]:
        return {p[0]: p[3] for p in self.params}

    @property
    def num_groups(self) -> int:
        return 1 + max(p[3] for p in self.params)

    @property
    def num_parameters(self) -> int:
        return sum(int(torch.Size(p[1]).numel()) for p in self.params)

    def to_json(self) -> dict[str, Any]:
        return {
            "params": [[n, list(s), d, g] for n, s, d, g in self.params],
            "static": [[n, list(s), d] for n, s, d in self.static],
            "optimizer": self.optimizer,
            "optimizer_class": self.optimizer_class,
            "loss": self.loss,
            "num_examples": self.num_examples,
            "num_outputs": self.num_outputs,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrajectoryHeader:
        return cls(
            params=tuple((n, tuple(s), dt, int(g)) for n, s, dt, g in d["params"]),
            static=tuple((n, tuple(s), dt) for n, s, dt in d["static"]),
            optimizer=d["optimizer"],
            optimizer_class=d["optimizer_class"],
            loss=d["loss"],
            num_examples=int(d["num_examples"]),
            num_outputs=int(d["num_outputs"]),
            run_id=str(d["run_id"]),
        )

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError if ``model``'s parameters/buffers differ in names, shapes or dtypes."""
        have = {n: (tuple(t.shape), str(t.dtype)) for n, t in _named_state(model).items()}
        want = {n: (tuple(s), dt) for n, s, dt, *_ in (*self.params, *self.static)}
        problems = [f"'{n}' is missing from the model" for n in want if n not in have]
        problems += [f"the model has an extra tensor '{n}'" for n in have if n not in want]
        problems += [
            f"'{n}' is {have[n][0]} {have[n][1]} in the model but {want[n][0]} {want[n][1]} in "
            "the trajectory"
            for n in want
            if n in have and have[n] != want[n]
        ]
        if problems:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise ValueError(
                f"the trajectory was recorded with a different model ({len(problems)} "
                f"mismatch(es): {shown}); pass the same architecture it was recorded with."
            )


def _named_state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return out


@dataclass(frozen=True)
class StepRecord:
    """Everything recorded about training step ``step`` (weights ``w_step -> w_{step+1}``).

    Attributes:
        step: the 0-based step number.
        indices: ``[B]`` int64 training-example indices of the batch.
        inputs: ``[B, ...]`` the batch inputs.
        targets: ``[B]`` or ``[B, O]`` the batch targets.
        outputs: ``[B, O]`` the network's outputs at ``w_step`` during training.
        output_grads: ``[B, O]`` per-example ``d loss_i / d f(x_i)`` at ``w_step``.
        loss: the batch-mean loss.
        grad_scale: the one scalar the optimizer's gradient was rescaled by (norm clipping;
            1.0 otherwise): the step used ``grad_scale * e_s``.
        rules: the optimizer's :class:`StepRule` per param group.
        hyper: the raw hyper-parameters per param group (lr, momentum, betas, ...).
        preconditioners: Adam's denominators ``D_step`` per parameter, else None.
    """

    step: int
    indices: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    outputs: torch.Tensor
    output_grads: torch.Tensor
    loss: float
    rules: tuple[StepRule, ...]
    hyper: tuple[dict[str, Any], ...]
    preconditioners: dict[str, torch.Tensor] | None = field(default=None)
    grad_scale: float = 1.0

    @property
    def batch_size(self) -> int:
        return int(self.indices.shape[0])

    def __repr__(self) -> str:
        pre = ", preconditioned" if self.preconditioners is not None else ""
        clip = f", grad_scale={self.grad_scale:.6g}" if self.grad_scale != 1.0 else ""
        return (
            f"StepRecord(step={self.step}, batch={self.batch_size}, "
            f"inputs={list(self.inputs.shape)}, loss={self.loss:.6g}{clip}{pre})"
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """The record's tensors under the store's key names."""
        s = self.step
        out = {
            f"idx.{s}": self.indices,
            f"x.{s}": self.inputs,
            f"y.{s}": self.targets,
            f"out.{s}": self.outputs,
            f"c.{s}": self.output_grads,
        }
        for name, d in (self.preconditioners or {}).items():
            out[f"D.{s}.{name}"] = d
        return out

    def scalars(self) -> dict[str, Any]:
        """The record's scalars as stored in the manifest."""
        return {
            "loss": self.loss,
            "grad_scale": self.grad_scale,
            "batch": self.batch_size,
            "rules": [r.to_dict() for r in self.rules],
            "hyper": list(self.hyper),
            "preconditioned": self.preconditioners is not None,
        }


class _Source(Protocol):
    num_steps: int

    def weights(self, step: int) -> dict[str, torch.Tensor]: ...

    def record(self, step: int) -> StepRecord: ...

    def rules(self, step: int) -> tuple[StepRule, ...]: ...

    def static(self) -> dict[str, torch.Tensor]: ...


class TrajectoryWriter(Protocol):
    """Where a recorder puts its steps: RAM or a store directory (:func:`open_writer`)."""

    def append(self, record: StepRecord, w_next: Mapping[str, torch.Tensor]) -> None:
        """Add step ``record.step`` and the weights after it."""

    def trajectory(self, model: nn.Module) -> Trajectory:
        """The :class:`Trajectory` of the steps appended so far, read through ``model``."""


def open_writer(
    store: str | os.PathLike | None,
    header: TrajectoryHeader,
    static: Mapping[str, torch.Tensor],
    w0: Mapping[str, torch.Tensor],
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> TrajectoryWriter:
    """A :class:`TrajectoryWriter` for a new recording: in memory (``store=None``) or streaming
    to the new directory ``store``."""
    if store is None:
        return _MemorySource(header, dict(static), dict(w0))
    return StoreWriter(store, header, static, w0, shard_bytes=shard_bytes)


class _MemorySource:
    """Steps held in RAM by the recorder (both its writer and the trajectory's source)."""

    def __init__(
        self, header: TrajectoryHeader, static: dict[str, torch.Tensor], w0: dict[str, torch.Tensor]
    ) -> None:
        self._header = header
        self._static = static
        self._weights = [w0]
        self._records: list[StepRecord] = []

    @property
    def num_steps(self) -> int:
        return len(self._records)

    def append(self, record: StepRecord, w_next: dict[str, torch.Tensor]) -> None:
        self._records.append(record)
        self._weights.append(dict(w_next))

    def trajectory(self, model: nn.Module) -> Trajectory:
        return Trajectory(model, self._header, self)

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        return self._weights[step]

    def record(self, step: int) -> StepRecord:
        return self._records[step]

    def rules(self, step: int) -> tuple[StepRule, ...]:
        return self._records[step].rules

    def static(self) -> dict[str, torch.Tensor]:
        return self._static


class StoreWriter:
    """Appends steps to a store directory; each full shard is written atomically, then the
    manifest is replaced, so the directory is a valid (possibly shorter) store at every moment.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        header: TrajectoryHeader,
        static: Mapping[str, torch.Tensor],
        w0: Mapping[str, torch.Tensor],
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and (
            not self.directory.is_dir() or any(self.directory.iterdir())
        ):
            raise FileExistsError(
                f"store {str(self.directory)!r} already exists and is not empty; pass a new "
                "directory (or Trajectory.load it)."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_bytes = int(shard_bytes)
        self._manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "header": header.to_json(),
            "num_steps": 0,
            "steps": [],
            "files": [],
        }
        init = {f"w0.{k}": v for k, v in w0.items()}
        init.update({f"static.{k}": v for k, v in static.items()})
        self._header = header
        self._run_id = header.run_id
        self._manifest["files"].append(
            write_shard(self.directory, "init.safetensors", init, run_id=self._run_id)
        )
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_steps: list[dict[str, Any]] = []
        self._pending_bytes = 0
        write_manifest(self.directory, self._manifest)

    @property
    def num_steps(self) -> int:
        """Steps appended so far (written or pending)."""
        return self._manifest["num_steps"] + len(self._pending_steps)

    def append(self, record: StepRecord, w_next: Mapping[str, torch.Tensor]) -> None:
        tensors = record.tensors()
        tensors.update({f"w.{record.step}.{k}": v for k, v in w_next.items()})
        self._pending.update(tensors)
        self._pending_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        self._pending_steps.append(record.scalars())
        if self._pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the pending steps as one shard and publish them in the manifest."""
        if not self._pending_steps:
            return
        first = self._manifest["num_steps"]
        name = f"steps-{first:08d}.safetensors"
        entry = write_shard(self.directory, name, self._pending, run_id=self._run_id)
        file_index = len(self._manifest["files"])
        for scalars in self._pending_steps:
            scalars["file"] = file_index
        self._manifest["files"].append(entry)
        self._manifest["steps"].extend(self._pending_steps)
        self._manifest["num_steps"] = first + len(self._pending_steps)
        write_manifest(self.directory, self._manifest)
        self._pending, self._pending_steps, self._pending_bytes = {}, [], 0

    def trajectory(self, model: nn.Module) -> Trajectory:
        """Flush the pending steps and read the store back."""
        self.flush()
        return Trajectory(
            model,
            self._header,
            _DiskSource(self.directory, read_manifest(self.directory), self._header),
        )


class _DiskSource:
    """Steps read lazily from a store directory."""

    def __init__(self, directory: Path, manifest: dict[str, Any], header: TrajectoryHeader):
        self.directory = directory
        self._manifest = manifest
        self._names = header.names
        self._static_names = [s[0] for s in header.static]
        self._reader = ShardReader(directory, manifest["files"], run_id=header.run_id)
        self.num_steps = int(manifest["num_steps"])
        if len(manifest["steps"]) != self.num_steps:
            raise StoreError(
                f"corrupted manifest: it lists {len(manifest['steps'])} steps but claims "
                f"{self.num_steps}."
            )

    def _file(self, step: int) -> str:
        return self._manifest["files"][self._manifest["steps"][step]["file"]]["name"]

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        if step == 0:
            return {n: self._reader.get("init.safetensors", f"w0.{n}") for n in self._names}
        f = self._file(step - 1)
        return {n: self._reader.get(f, f"w.{step - 1}.{n}") for n in self._names}

    def record(self, step: int) -> StepRecord:
        meta = self._manifest["steps"][step]
        f = self._file(step)
        get = self._reader.get
        pre = None
        if meta["preconditioned"]:
            pre = {n: get(f, f"D.{step}.{n}") for n in self._names}
        return StepRecord(
            step=step,
            indices=get(f, f"idx.{step}"),
            inputs=get(f, f"x.{step}"),
            targets=get(f, f"y.{step}"),
            outputs=get(f, f"out.{step}"),
            output_grads=get(f, f"c.{step}"),
            loss=float(meta["loss"]),
            grad_scale=float(meta["grad_scale"]),
            rules=tuple(StepRule.from_dict(r) for r in meta["rules"]),
            hyper=tuple(meta["hyper"]),
            preconditioners=pre,
        )

    def rules(self, step: int) -> tuple[StepRule, ...]:
        return tuple(StepRule.from_dict(r) for r in self._manifest["steps"][step]["rules"])

    def static(self) -> dict[str, torch.Tensor]:
        return {n: self._reader.get("init.safetensors", f"static.{n}") for n in self._static_names}

    def verify_all(self) -> None:
        self._reader.verify_all()


class Trajectory:
    """A recorded training run of ``model``, read step by step.

    Build one with :class:`~kernelens.epk.TrajectoryRecorder`, :func:`~kernelens.epk.fit` or
    :meth:`load`. ``weights(s)`` for ``s = 0..num_steps`` are the parameter states
    ``w_0 .. w_S``; ``step(s)`` is what happened between ``w_s`` and ``w_{s+1}``.
    """

    def __init__(self, model: nn.Module, header: TrajectoryHeader, source: _Source) -> None:
        self.model = model
        self.header = header
        self._source = source

    # ------------------------------------------------------------------ access
    @property
    def num_steps(self) -> int:
        """``S``, the number of recorded optimizer steps."""
        return self._source.num_steps

    def __len__(self) -> int:
        return self.num_steps

    @property
    def num_examples(self) -> int:
        """``N``: attributions have one column per training-example index ``0..N-1``."""
        return self.header.num_examples

    @property
    def num_outputs(self) -> int:
        """``O``, the model's output width."""
        return self.header.num_outputs

    @property
    def param_names(self) -> list[str]:
        """Names of the trained parameters (as in ``model.named_parameters()``)."""
        return self.header.names

    @property
    def path(self) -> Path | None:
        """The store directory when the trajectory is on disk, else None."""
        return getattr(self._source, "directory", None)

    def weights(self, step: int) -> dict[str, torch.Tensor]:
        """Trained parameters ``w_step`` (``0 <= step <= num_steps``), name -> tensor."""
        self._check_step(step, self.num_steps, "weights")
        return self._source.weights(step)

    def step(self, step: int) -> StepRecord:
        """The :class:`StepRecord` of step ``step`` (``0 <= step < num_steps``)."""
        self._check_step(step, self.num_steps - 1, "step")
        return self._source.record(step)

    def step_rules(self, step: int) -> tuple[StepRule, ...]:
        """The optimizer's :class:`StepRule` per param group at ``step`` (no tensors read)."""
        self._check_step(step, self.num_steps - 1, "step")
        return self._source.rules(step)

    def static(self) -> dict[str, torch.Tensor]:
        """Frozen parameters and buffers, constant during training."""
        return self._source.static()

    def state(self, step: int) -> dict[str, torch.Tensor]:
        """Full state (trained weights ``w_step`` plus static tensors) for ``functional_call``."""
        out = dict(self.static())
        out.update(self.weights(step))
        return out

    @staticmethod
    def _check_step(step: int, last: int, what: str) -> None:
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"{what} index must be an int, got {type(step).__name__}.")
        if not 0 <= step <= last:
            raise IndexError(f"{what} index {step} is out of range [0, {last}].")

    def training_examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices [M], inputs [M, ...])`` of every example that appeared in a batch,
        sorted by index (read from the recorded batches)."""
        found: dict[int, torch.Tensor] = {}
        for s in range(self.num_steps):
            rec = self.step(s)
            for j, i in enumerate(rec.indices.tolist()):
                if i not in found:
                    found[i] = rec.inputs[j]
            if len(found) == self.num_examples:
                break
        idx = sorted(found)
        return torch.tensor(idx, dtype=torch.int64), torch.stack([found[i] for i in idx])

    # ------------------------------------------------------------------ files
    def save(
        self,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
    ) -> Path:
        """Write the trajectory to the directory ``path`` atomically (a complete store appears
        at ``path`` or nothing changes). Returns the path."""
        target = Path(path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{str(target)!r} already exists; pass overwrite=True.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            writer = StoreWriter(
                tmp, self.header, self.static(), self.weights(0), shard_bytes=shard_bytes
            )
            for s in range(self.num_steps):
                writer.append(self.step(s), self.weights(s + 1))
            writer.flush()
            replace_directory(tmp, target, overwrite=overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module, *, verify: bool = False) -> Trajectory:
        """Open the store at ``path`` for ``model`` (same architecture as recorded).

        Sizes of all files are checked now, checksums before each file's first use (or all
        now with ``verify=True``). Steps are read lazily, so long runs stream from disk.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        directory = Path(path)
        manifest = read_manifest(directory)
        try:
            header = TrajectoryHeader.from_json(manifest["header"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"corrupted manifest in {str(directory)!r}: {exc!r}.") from exc
        header.check_model(model)
        source = _DiskSource(directory, manifest, header)
        if verify:
            source.verify_all()
        return cls(model, header, source)

    def __repr__(self) -> str:
        where = f"store={str(self.path)!r}" if self.path is not None else "in memory"
        return (
            f"Trajectory({self.header.optimizer_class}, steps={self.num_steps}, "
            f"examples={self.num_examples}, outputs={self.num_outputs}, "
            f"parameters={self.header.num_parameters}, {where})"
        )
