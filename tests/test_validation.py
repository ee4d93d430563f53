"""The shared validation, memory and progress helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernelens._memory import resolve_memory_budget, tile_size
from kernelens._progress import progress, progress_enabled
from kernelens._validation import (
    as_tensor,
    check_choice,
    check_consistent_length,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_same_device_dtype,
)


def test_as_tensor_converts_and_checks():
    t = as_tensor(np.arange(6).reshape(2, 3), "X", ndim=2)
    assert t.dtype == torch.get_default_dtype() and t.shape == (2, 3)
    assert as_tensor([[1, 2]], "X", floating=False).dtype == torch.int64
    with pytest.raises(ValueError, match=r"X must be 2-D, got shape \(3,\).*reshape"):
        as_tensor(np.zeros(3), "X", ndim=2)
    with pytest.raises(ValueError, match="X is empty"):
        as_tensor(np.zeros((0, 3)), "X")
    with pytest.raises(ValueError, match=r"X contains 2 non-finite value\(s\) \(NaN; first at"):
        as_tensor([[np.nan, 1.0, np.nan]], "X")
    with pytest.raises(ValueError, match=r"\(Inf"):
        as_tensor([[np.inf]], "X")
    with pytest.raises(TypeError, match="X must hold numbers"):
        as_tensor([["a", "b"]], "X")
    with pytest.raises(TypeError, match="string"):
        as_tensor("abc", "X")


def test_scalar_checks():
    assert check_positive(2, "bandwidth") == 2.0
    assert check_positive(torch.tensor(0.5), "bandwidth") == 0.5
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="bandwidth must be a finite positive"):
            check_positive(bad, "bandwidth")
    with pytest.raises(TypeError, match="reg must be a number"):
        check_nonnegative("1", "reg")
    with pytest.raises(TypeError, match="reg must be a number"):
        check_nonnegative(True, "reg")
    assert check_nonnegative(0, "reg") == 0.0
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        check_positive_int(0, "k")
    with pytest.raises(TypeError, match="k must be an integer"):
        check_positive_int(2.0, "k")
    with pytest.raises(ValueError, match="unknown method 'x'; valid options are: 'a', 'b'"):
        check_choice("x", "method", ["a", "b"])


def test_pair_checks():
    a = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="b has dtype torch.float32 but a has dtype torch.float64"):
        check_same_device_dtype({"a": a, "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="X has 3, y has 2"):
        check_consistent_length(X=np.zeros(3), y=np.zeros(2))
    assert check_consistent_length(X=np.zeros(3), y=np.zeros(3)) == 3


def test_memory_budget_and_tiles():
    assert resolve_memory_budget(None) > 0
    assert tile_size(1000, 8, 8 * 100 * 1024 * 1024) == 1000
    assert tile_size(10**9, 1 << 20, 1 << 20) == 1  # never zero rows
    with pytest.raises(ValueError, match="memory_budget must be a positive"):
        resolve_memory_budget(-5)
    with pytest.raises(TypeError, match="memory_budget must be a number of bytes"):
        resolve_memory_budget("1GB")


def test_progress_is_silent_without_terminal(monkeypatch, capsys):
    monkeypatch.setenv("KERNELENS_PROGRESS", "0")
    assert not progress_enabled()
    assert list(progress(range(5))) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("KERNELENS_PROGRESS")
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    assert progress_enabled(True)
