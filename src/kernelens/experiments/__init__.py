"""Experiments reproducing the source documents' results; each returns a :class:`Result`."""

from .registry import Experiment, get_experiment, list_experiments, register, run_experiment
from .result import Result, Table

__all__ = [
    "Experiment",
    "Result",
    "Table",
    "get_experiment",
    "list_experiments",
    "register",
    "run_experiment",
]
