"""Experiments reproducing the source documents' results; each returns a :class:`Result`."""

from .registry import (
    Experiment,
    MissingExtraError,
    get_experiment,
    list_experiments,
    register,
    run_experiment,
)
from .result import Claim, Result, Table, seed_std

__all__ = [
    "Claim",
    "Experiment",
    "MissingExtraError",
    "Result",
    "Table",
    "get_experiment",
    "list_experiments",
    "register",
    "run_experiment",
    "seed_std",
]
