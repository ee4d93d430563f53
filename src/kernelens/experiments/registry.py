"""A registry of named experiments.

An experiment is a function ``(quick: bool) -> Result``. Experiments live by area in
subpackages of :mod:`kernelens.experiments` (e.g. ``experiments/rfm/text.py``); every module
there registers its own with :func:`register` when imported (modules whose name starts with
``_`` are skipped); the CLI and report find them through :func:`list_experiments` and
:func:`run_experiment`. Experiments never print: results are data.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from .._validation import check_choice
from .result import Result

__all__ = ["Experiment", "get_experiment", "list_experiments", "register", "run_experiment"]

ExperimentFn = Callable[[bool], Result]

#: Modules of this package that hold no experiments.
_INFRASTRUCTURE = {f"{__package__}.registry", f"{__package__}.result"}


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, title, area (package) and function."""

    name: str
    title: str
    area: str
    fn: ExperimentFn

    def run(self, quick: bool = True) -> Result:
        result = self.fn(quick)
        if not isinstance(result, Result):
            raise TypeError(
                f"experiment {self.name!r} returned {type(result).__name__}, not Result."
            )
        result.quick = quick
        return result


_REGISTRY: dict[str, Experiment] = {}
_loaded = False


def register(name: str, *, title: str, area: str) -> Callable[[ExperimentFn], ExperimentFn]:
    """Decorator registering ``fn(quick) -> Result`` under ``name``."""

    def deco(fn: ExperimentFn) -> ExperimentFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"experiment {name!r} is registered twice.")
        _REGISTRY[name] = Experiment(name=name, title=title, area=area, fn=fn)
        return fn

    return deco


def _load() -> None:
    """Import every module of :mod:`kernelens.experiments` and of its area subpackages, at any
    depth; each registers its experiments."""
    global _loaded
    if not _loaded:
        for name in _experiment_modules():
            importlib.import_module(name)
        _loaded = True


def _experiment_modules() -> list[str]:
    """Dotted names of the modules to import, sorted (private ``_*`` ones and their subpackages
    skipped)."""
    names = []
    for info in pkgutil.walk_packages(_package_path(), prefix=f"{__package__}."):
        parts = info.name[len(__package__) + 1 :].split(".")
        if info.name not in _INFRASTRUCTURE and not any(p.startswith("_") for p in parts):
            names.append(info.name)
    return sorted(names)


def _package_path() -> list[str]:
    return list(importlib.import_module(__package__).__path__)


def list_experiments() -> list[Experiment]:
    """All registered experiments, in registration order."""
    _load()
    return list(_REGISTRY.values())


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` (error lists the valid names)."""
    _load()
    check_choice(name, "experiment", _REGISTRY)
    return _REGISTRY[name]


def run_experiment(name: str, quick: bool = True) -> Result:
    """Run the experiment ``name`` and return its Result."""
    return get_experiment(name).run(quick)
