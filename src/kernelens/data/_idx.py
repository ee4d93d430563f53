"""Read and write IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the array in big-endian C order.
"""

from __future__ import annotations

import functools
import gzip
import io
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


@functools.lru_cache(maxsize=8)
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` compressed when the name ends in ``.gz``).

    The result is cached per path and read-only; copy it before modifying.

    Returns:
        The array with the shape stored in the file, in native byte order.
    """
    path = Path(path)
    with _open(path) as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPE_CODES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}).")
    dtype, ndim = _TYPE_CODES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes) "
            f"but the file holds {len(data)} bytes."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    arr.flags.writeable = False
    return arr


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as IDX; gzip-compressed (level 9, mtime 0, so byte-reproducible) if
    ``path`` ends in ``.gz``."""
    path = Path(path)
    codes = {dt.newbyteorder("="): code for code, dt in _TYPE_CODES.items()}
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in codes:
        raise TypeError(
            f"array dtype {array.dtype} has no IDX type code; use one of {list(codes)}."
        )
    big = np.ascontiguousarray(array, dtype=native.newbyteorder(">"))
    header = bytes([0, 0, codes[native], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + big.tobytes()
    if path.suffix == ".gz":
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as fh,
        ):
            fh.write(payload)
    else:
        path.write_bytes(payload)
