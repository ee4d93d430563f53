"""The default memory budget is a declared number, never a reading of free memory (issue 10, item 17)."""

import pytest

from kernelens._memory import (
    DEFAULT_MEMORY_BUDGET,
    MEMORY_BUDGET_ENV,
    default_memory_budget,
    resolve_memory_budget,
)


def test_default_is_fixed_2_gib(monkeypatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    assert DEFAULT_MEMORY_BUDGET == 2 * 1024**3
    assert default_memory_budget() == DEFAULT_MEMORY_BUDGET
    assert resolve_memory_budget(None) == DEFAULT_MEMORY_BUDGET


def test_default_does_not_read_free_memory(monkeypatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("the default budget must not read /proc/meminfo")

    monkeypatch.setattr("builtins.open", forbidden)
    assert default_memory_budget() == DEFAULT_MEMORY_BUDGET


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1 << 20),
        ("64M", 64 << 20),
        ("3G", 3 << 30),
        ("1.5GiB", 3 << 29),
        ("2048k", 2048 << 10),
    ],
)
def test_environment_override(monkeypatch, text, expected):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, text)
    assert default_memory_budget() == expected
    assert resolve_memory_budget(123 << 20) == 123 << 20  # an explicit budget wins


@pytest.mark.parametrize("text", ["lots", "-5G", "0", "2 gigabytes"])
def test_bad_environment_value_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, text)
    with pytest.raises(ValueError, match=MEMORY_BUDGET_ENV):
        default_memory_budget()
