"""On-disk format of a trajectory: safetensors shards plus a JSON manifest with checksums.

A store is a directory::

    manifest.json                 format tag, model/optimizer description, run id, per-step
                                  scalars, for every data file its byte size and SHA-256, and
                                  the SHA-256 of the manifest itself
    init.safetensors              initial weights w_0 and the static tensors (frozen
                                  parameters and buffers)
    steps-00000000.safetensors    per step s: the weights after the step, the batch (indices,
                                  inputs, targets, outputs, dloss/doutput) and Adam's
                                  denominators; one file holds a run of consecutive steps

Every data file carries the run id in its safetensors metadata, so a file from another
recording is refused even where its manifest entry was copied too; the manifest's own checksum
catches any edit of its scalars (a learning rate, ``num_examples``). Every file is written to a temporary name, flushed to disk and renamed into place
(``os.replace`` is atomic on POSIX), and the manifest is replaced only after the files it lists
are complete, so an interrupted write leaves the previous consistent store behind. Reading
checks sizes when the store is opened and each file's checksum before its first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .._files import write_atomic

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "ShardReader",
    "StoreError",
    "read_manifest",
    "replace_directory",
    "write_atomic",
    "write_manifest",
    "write_shard",
]

FORMAT = "kernelens.epk.trajectory"
VERSION = 2
MANIFEST = "manifest.json"
#: Manifest key holding the SHA-256 of the rest of the manifest.
CHECKSUM = "manifest_sha256"


class StoreError(ValueError):
    """A trajectory store is missing, foreign, truncated, corrupted or incompatible."""


def write_shard(
    directory: Path, name: str, tensors: Mapping[str, torch.Tensor], *, run_id: str
) -> dict[str, Any]:
    """Write ``tensors`` as one safetensors file whose metadata names the run and the file;
    return its manifest entry (name, bytes, sha256)."""
    data = safetensors_bytes(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        metadata={"format": FORMAT, "run_id": run_id, "name": name},
    )
    write_atomic(directory / name, data)
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically (re)write the manifest with its checksum; call only after the files it lists
    are written."""
    sealed = {**manifest, CHECKSUM: _manifest_digest(manifest)}
    text = json.dumps(sealed, indent=1, sort_keys=True)
    write_atomic(directory / MANIFEST, text.encode())


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check a store's manifest: format tag, version, and every listed file's size."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StoreError(
            f"trajectory store {str(directory)!r} does not exist or is not a directory."
        )
    path = directory / MANIFEST
    if not path.is_file():
        raise StoreError(
            f"{str(directory)!r} is not a kernelens trajectory store (no {MANIFEST}); pass the "
            "directory written by Trajectory.save or TrajectoryRecorder(store=...)."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"the manifest {str(path)!r} is corrupted (not valid JSON: {exc})."
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(
            f"{str(path)!r} is not a kernelens trajectory manifest (format tag "
            f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})."
        )
    if manifest.get("version") != VERSION:
        raise StoreError(
            f"trajectory store version {manifest.get('version')!r} is not supported by this "
            f"kernelens (it reads version {VERSION})."
        )
    if manifest.get(CHECKSUM) != _manifest_digest(manifest):
        raise StoreError(
            f"the manifest {str(path)!r} was edited after it was written (its checksum does not "
            "match its content: a learning rate, num_examples or a file entry changed); restore "
            "the original manifest or record the run again."
        )
    for entry in manifest["files"]:
        f = directory / entry["name"]
        if not f.is_file():
            raise StoreError(
                f"trajectory store is truncated: data file {entry['name']!r} is missing."
            )
        size = f.stat().st_size
        if size != entry["bytes"]:
            raise StoreError(
                f"trajectory store is truncated or corrupted: {entry['name']!r} has {size} bytes, "
                f"the manifest records {entry['bytes']}."
            )
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class ShardReader:
    """Reads tensors from a store's files, verifying each file's checksum before first use.

    Keeps at most one file open (trajectories are read step by step, in order or backwards).
    """

    def __init__(self, directory: Path, files: list[dict[str, Any]], *, run_id: str) -> None:
        self.directory = Path(directory)
        self.run_id = run_id
        self._entries = {e["name"]: e for e in files}
        self._verified: set[str] = set()
        self._open_name: str | None = None
        self._handle: Any = None

    def verify(self, name: str) -> None:
        """Check ``name``'s SHA-256 against the manifest (once per reader)."""
        if name in self._verified:
            return
        entry = self._entries[name]
        digest = _sha256(self.directory / name)
        if digest != entry["sha256"]:
            raise StoreError(
                f"trajectory store is corrupted: checksum of {name!r} does not match the "
                "manifest (the file changed after it was written)."
            )
        self._verified.add(name)

    def _open(self, name: str) -> Any:
        """Open ``name`` and check that it is a safetensors file of this run."""
        try:
            handle = safe_open(str(self.directory / name), framework="pt", device="cpu")
            meta = handle.metadata() or {}
        except Exception as exc:  # safetensors raises its own error type for a foreign file
            raise StoreError(
                f"trajectory store file {name!r} is not a safetensors file ({exc}); it was "
                "replaced by something else (kernelens never writes pickles). Restore the "
                "store from the original recording."
            ) from exc
        if meta.get("run_id") != self.run_id or meta.get("name") != name:
            raise StoreError(
                f"trajectory store file {name!r} belongs to another recording (run id "
                f"{meta.get('run_id')!r}, file {meta.get('name')!r}; this store is run "
                f"{self.run_id!r}); files of different runs cannot be mixed."
            )
        return handle

    def verify_all(self) -> None:
        """Check every file's checksum and that it belongs to this run."""
        for name in self._entries:
            self.verify(name)
            self._open(name)

    def get(self, name: str, key: str) -> torch.Tensor:
        """Tensor ``key`` from file ``name``."""
        if self._open_name != name:
            self.verify(name)
            self._handle = self._open(name)
            self._open_name = name
        try:
            return self._handle.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error type for a missing key
            raise StoreError(f"trajectory store file {name!r} lacks tensor {key!r}.") from exc


def replace_directory(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move the fully written directory ``tmp`` to ``target`` (replacing it if ``overwrite``)."""
    if target.exists():
        if not overwrite:
            raise FileExistsError(
                f"{str(target)!r} already exists; pass overwrite=True to replace it."
            )
        if not (target / MANIFEST).is_file() and any(target.iterdir()):
            raise FileExistsError(
                f"{str(target)!r} exists and is not a trajectory store; refusing to replace it."
            )
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
