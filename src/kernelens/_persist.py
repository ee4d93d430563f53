"""Saving fitted estimators without pickle: one safetensors file whose JSON header describes
the estimator.

``est.save(path)`` writes every tensor and array of the fitted estimator (coefficients,
training inputs, metrics, factors) as safetensors and everything else (hyper-parameters,
scalars, class labels, the kernel's description) as JSON in the file's metadata, together with
the format version, the kernelens version and a SHA-256 of the tensor data. ``Class.load(path)``
checks the format, the version, the class and the checksum before it rebuilds the estimator.

Only values kernelens can describe are saved: numbers, strings, lists, dicts, tensors, numpy
arrays, torch dtypes, the built-in kernels of :data:`kernelens.kernels.KERNELS` and
kernelens' own dataclasses (e.g. RFM's ``KernelMachine``). Anything else, in particular a
custom :class:`~kernelens.kernels.Kernel` subclass, is refused with an error naming the
attribute, because rebuilding it would need its code (which pickle would run on load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from ._files import write_atomic

__all__ = ["FORMAT", "VERSION", "EstimatorFileError", "PersistMixin"]

FORMAT = "kernelens.estimator"
VERSION = 1
_HEADER_KEY = "kernelens"

E = TypeVar("E", bound="PersistMixin")


class EstimatorFileError(ValueError):
    """A saved estimator file is missing, foreign, corrupted, of another version or class."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _builtin_kernels() -> set[type]:
    from .kernels.registry import KERNELS

    return set(KERNELS.values())


def _is_kernel(value: Any) -> bool:
    from .kernels.base import Kernel

    return isinstance(value, Kernel)


class _Encoder:
    """Turns an estimator's attributes into JSON plus a dict of tensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating):
            v = float(value)
            return v if math.isfinite(v) else {"t": "float", "v": repr(v)}
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            # keep the memory layout (e.g. a column-major solver output): a different layout
            # changes BLAS rounding, and a loaded estimator must predict bit for bit the same
            perm = sorted(range(t.ndim), key=lambda i: -t.stride(i))
            if not t.permute(perm).is_contiguous():
                perm = list(range(t.ndim))
            self.tensors[path] = t.permute(perm).contiguous().clone()
            if perm == list(range(t.ndim)):
                return {"t": "tensor", "key": path}
            return {"t": "tensor", "key": path, "perm": perm}
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biufc":
                self.tensors[path] = torch.from_numpy(np.ascontiguousarray(value).copy())
                return {"t": "ndarray", "key": path}
            if value.dtype.kind in "U" or (
                value.dtype.kind == "O"
                and all(isinstance(x, str | int | float) for x in value.flat)
            ):
                return {"t": "ndarray_values", "dtype": value.dtype.str, "v": value.tolist()}
            raise TypeError(f"{path}: a numpy array of dtype {value.dtype} cannot be saved.")
        if isinstance(value, torch.dtype):
            return {"t": "dtype", "v": str(value).removeprefix("torch.")}
        if isinstance(value, list | tuple):
            items = [self.encode(x, f"{path}.{i}") for i, x in enumerate(value)]
            return {"t": type(value).__name__, "v": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{path}: only dicts with string keys can be saved.")
            return {"t": "dict", "v": {k: self.encode(v, f"{path}.{k}") for k, v in value.items()}}
        return self._object(value, path)

    def _object(self, value: Any, path: str) -> Any:
        cls = type(value)
        if _is_kernel(value):
            if cls not in _builtin_kernels():
                raise TypeError(
                    f"{path} is a {_qualname(cls)}, a custom Kernel subclass: kernelens can only "
                    "save the built-in kernels (kernelens.kernels.KERNELS), because rebuilding "
                    "another class would need its code. Use a built-in kernel (a name such as "
                    "'laplace' with kernel_params), or save the fitted attributes yourself."
                )
        elif not (dataclasses.is_dataclass(value) and cls.__module__.startswith("kernelens.")):
            raise TypeError(
                f"{path} is a {_qualname(cls)}, which kernelens cannot describe in JSON; "
                "only numbers, strings, lists, dicts, tensors, arrays, built-in kernels and "
                "kernelens dataclasses can be saved."
            )
        state = {k: self.encode(v, f"{path}.{k}") for k, v in vars(value).items()}
        return {"t": "object", "cls": _qualname(cls), "v": state}


def _resolve_class(name: str) -> type:
    """A class saved by :class:`_Encoder`: only kernelens classes are ever looked up."""
    module, _, qual = name.rpartition(".")
    if not module.startswith("kernelens."):
        raise EstimatorFileError(f"the file names the class {name!r}, which is not kernelens'.")
    try:
        cls = getattr(importlib.import_module(module), qual)
    except (ImportError, AttributeError) as exc:
        raise EstimatorFileError(
            f"the file needs the class {name!r}, which this kernelens does not have ({exc}); "
            "load it with the kernelens version that saved it."
        ) from exc
    if not (cls in _builtin_kernels() or dataclasses.is_dataclass(cls)):
        raise EstimatorFileError(f"the file names {name!r}, which kernelens does not rebuild.")
    return cls


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(node, dict):
        return node
    t, v = node.get("t"), node.get("v")
    if t == "float":
        return float(v)
    if t == "tensor":
        x = tensors[node["key"]]
        if "perm" in node:
            x = x.permute([node["perm"].index(i) for i in range(x.ndim)])
        return x
    if t == "ndarray":
        return tensors[node["key"]].numpy()
    if t == "ndarray_values":
        return np.array(v, dtype=np.dtype(node["dtype"]))
    if t == "dtype":
        return getattr(torch, v)
    if t == "list":
        return [_decode(x, tensors) for x in v]
    if t == "tuple":
        return tuple(_decode(x, tensors) for x in v)
    if t == "dict":
        return {k: _decode(x, tensors) for k, x in v.items()}
    if t == "object":
        cls = _resolve_class(node["cls"])
        obj = object.__new__(cls)
        for k, x in v.items():
            object.__setattr__(obj, k, _decode(x, tensors))
        return obj
    raise EstimatorFileError(f"unknown value tag {t!r} in the file's header.")


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class PersistMixin:
    """``save(path)`` / ``Class.load(path)`` for fitted scikit-learn style estimators."""

    def save(self, path: str | Path) -> Path:
        """Save the fitted estimator to ``path`` (a ``.safetensors`` file), atomically.

        Raises:
            sklearn.exceptions.NotFittedError: the estimator is not fitted.
            TypeError: an attribute cannot be described without pickle (e.g. a custom Kernel
                subclass); the message names it.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        enc = _Encoder()
        state = {k: enc.encode(v, k) for k, v in vars(self).items()}
        from . import __version__

        header = {
            "format": FORMAT,
            "version": VERSION,
            "kernelens": __version__,
            "class": _qualname(type(self)),
            "state": state,
            "sha256": _checksum(enc.tensors),
        }
        data = safetensors_bytes(enc.tensors, metadata={_HEADER_KEY: json.dumps(header)})
        path = Path(path)
        write_atomic(path, data)
        return path

    @classmethod
    def load(cls: type[E], path: str | Path) -> E:
        """The estimator saved at ``path`` by :meth:`save` (of this exact class).

        Raises:
            EstimatorFileError: the file is missing, not a kernelens estimator, of another
                format version or class, or its tensors do not match the recorded checksum.
        """
        path = Path(path)
        if not path.is_file():
            raise EstimatorFileError(f"no saved estimator at {path}.")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = safetensors_load(path.read_bytes())
        except (SafetensorError, OSError, ValueError) as exc:
            raise EstimatorFileError(
                f"{path} is not a readable safetensors file ({exc}); it may be truncated."
            ) from exc
        try:
            header = json.loads(meta[_HEADER_KEY])
        except (KeyError, json.JSONDecodeError) as exc:
            raise EstimatorFileError(
                f"{path} is a safetensors file but not a saved kernelens estimator."
            ) from exc
        if header.get("format") != FORMAT:
            raise EstimatorFileError(f"{path} is not a saved kernelens estimator.")
        if header.get("version") != VERSION:
            raise EstimatorFileError(
                f"{path} is estimator format version {header.get('version')!r}; this kernelens "
                f"reads version {VERSION}. Load it with kernelens {header.get('kernelens')}."
            )
        if header["class"] != _qualname(cls):
            raise EstimatorFileError(
                f"{path} holds a {header['class'].rsplit('.', 1)[-1]}, not a {cls.__name__}: "
                f"load it with {header['class'].rsplit('.', 1)[-1]}.load."
            )
        if _checksum(tensors) != header["sha256"]:
            raise EstimatorFileError(
                f"{path} is corrupted: its tensors do not match the checksum recorded when it "
                "was saved."
            )
        est = cls.__new__(cls)
        for k, node in header["state"].items():
            setattr(est, k, _decode(node, tensors))
        return est
