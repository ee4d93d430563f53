"""On-disk format of a trajectory: safetensors shards plus a JSON manifest with checksums.

A store is a directory::

    manifest.json                 format tag, model/optimizer description, per-step scalars,
                                  and for every data file its byte size and SHA-256
    init.safetensors              initial weights w_0 and the static tensors (frozen
                                  parameters and buffers)
    steps-00000000.safetensors    per step s: the weights after the step, the batch (indices,
                                  inputs, targets, outputs, dloss/doutput) and Adam's
                                  denominators; one file holds a run of consecutive steps

Every file is written to a temporary name, flushed to disk and renamed into place
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
VERSION = 1
MANIFEST = "manifest.json"


class StoreError(ValueError):
    """A trajectory store is missing, foreign, truncated, corrupted or incompatible."""


def write_shard(directory: Path, name: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Write ``tensors`` as one safetensors file; return its manifest entry (name, bytes, sha256)."""
    data = safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    write_atomic(directory / name, data)
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically (re)write the manifest; call only after the files it lists are written."""
    text = json.dumps(manifest, indent=1, sort_keys=True)
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

    def __init__(self, directory: Path, files: list[dict[str, Any]]) -> None:
        self.directory = Path(directory)
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

    def get(self, name: str, key: str) -> torch.Tensor:
        """Tensor ``key`` from file ``name``."""
        if self._open_name != name:
            self.verify(name)
            self._handle = safe_open(str(self.directory / name), framework="pt", device="cpu")
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
