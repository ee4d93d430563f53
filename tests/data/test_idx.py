"""IDX reading and writing: round trips, byte order, and clear errors for bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from kernelens.data._idx import read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_round_trip(tmp_path, rng, dtype, suffix):
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable


def test_big_endian_layout(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([1, 256], dtype=np.int32))
    # magic 0 0 0x0C 1, dim 2, then big-endian int32 payload
    assert path.read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 0])


def test_gzip_output_is_byte_reproducible(tmp_path):
    array = np.arange(1000, dtype=np.uint8).reshape(10, 100)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_truncated(tmp_path):
    path = tmp_path / "short.idx.gz"
    payload = bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(5)
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="no IDX type code"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.complex64))
