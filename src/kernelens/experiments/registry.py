"""A registry of named experiments.

An experiment is a function ``(quick: bool) -> Result``. Experiments live by area in
subpackages of :mod:`kernelens.experiments` (e.g. ``experiments/rfm/text.py``); every module
there registers its own with :func:`register` when imported (modules whose name starts with
``_`` are skipped); the CLI and report find them through :func:`list_experiments` and
:func:`run_experiment`. Experiments never print: results are data.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from .._validation import check_choice
from .result import Result

__all__ = [
    "OPTIONAL_PACKAGES",
    "Experiment",
    "MissingExtraError",
    "get_experiment",
    "list_experiments",
    "register",
    "run_experiment",
    "unavailable_modules",
]

ExperimentFn = Callable[[bool], Result]

#: Optional packages experiments may need (import name -> the kernelens extra installing it,
#: as declared in pyproject.toml). Experiment modules import them inside the experiment, never
#: at module level, so that ``kernelens list`` works with the core dependencies alone.
OPTIONAL_PACKAGES: dict[str, str] = {
    "sacrebleu": "experiments",
    "gymnasium": "experiments",
    "stim": "experiments",
    "pymatching": "experiments",
    "faiss": "fast",
    "dask": "scale",
    "distributed": "scale",
}


class MissingExtraError(ImportError):
    """An experiment needs an optional package that is not installed."""


def _install_hint(packages: tuple[str, ...]) -> str:
    extras = sorted({OPTIONAL_PACKAGES.get(p, "experiments") for p in packages})
    return f'pip install "kernelens[{",".join(extras)}]"'


#: Modules of this package that hold no experiments.
_INFRASTRUCTURE = {f"{__package__}.registry", f"{__package__}.result"}


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: registry name (``kernelens run NAME``).
        title: a human title.
        area: the kernelens package it exercises.
        fn: ``fn(quick) -> Result``.
        requires: optional packages (import names) it needs beyond the core dependencies.
        full_minutes: a rough estimate of the full mode's run time on 2 CPU cores, in
            minutes (``None`` when none is recorded). The registered values were estimated
            from each quick mode's time scaled by the full mode's extra work, not measured;
            the CLI prefers the time of an earlier full run in the same ``--out``.
    """

    name: str
    title: str
    area: str
    fn: ExperimentFn
    requires: tuple[str, ...] = ()
    full_minutes: float | None = None

    @property
    def missing(self) -> tuple[str, ...]:
        """The packages of :attr:`requires` that are not installed."""
        return tuple(p for p in self.requires if importlib.util.find_spec(p) is None)

    @property
    def extras(self) -> tuple[str, ...]:
        """The kernelens extras that install :attr:`requires`."""
        return tuple(sorted({OPTIONAL_PACKAGES.get(p, "experiments") for p in self.requires}))

    def check_available(self) -> None:
        """Raise :class:`MissingExtraError` naming the install command if a package is missing."""
        if missing := self.missing:
            raise MissingExtraError(
                f"experiment {self.name!r} needs {', '.join(missing)}, which is not installed: "
                f"{_install_hint(missing)}"
            )

    def run(self, quick: bool = True) -> Result:
        """Run the experiment (``quick``: the CI-sized version) and return its Result."""
        self.check_available()
        result = self.fn(quick)
        if not isinstance(result, Result):
            raise TypeError(
                f"experiment {self.name!r} returned {type(result).__name__}, not Result."
            )
        result.quick = quick
        return result


_REGISTRY: dict[str, Experiment] = {}
#: experiment modules that could not be imported -> the optional package they lack
_UNAVAILABLE: dict[str, str] = {}
_loaded = False


def register(
    name: str,
    *,
    title: str,
    area: str,
    requires: tuple[str, ...] = (),
    full_minutes: float | None = None,
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Decorator registering ``fn(quick) -> Result`` under ``name``.

    Args:
        name: the registry name.
        title: a human title.
        area: the kernelens package the experiment exercises.
        requires: optional packages (import names, e.g. ``("sacrebleu",)``) the experiment
            imports inside its function; ``run`` refuses with the install command when one is
            missing.
        full_minutes: a rough estimate of the full mode's run time (minutes, 2 CPU cores),
            shown before a full run.
    """

    def deco(fn: ExperimentFn) -> ExperimentFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"experiment {name!r} is registered twice.")
        _REGISTRY[name] = Experiment(
            name=name,
            title=title,
            area=area,
            fn=fn,
            requires=tuple(requires),
            full_minutes=full_minutes,
        )
        return fn

    return deco


def _load() -> None:
    """Import every module of :mod:`kernelens.experiments` and of its area subpackages, at any
    depth; each registers its experiments."""
    global _loaded
    if not _loaded:
        for name in _experiment_modules():
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                # A module importing an optional package at top level (it should import it
                # inside the experiment): report it instead of breaking `kernelens list`.
                top = (exc.name or "").split(".")[0]
                if top not in OPTIONAL_PACKAGES:
                    raise
                _UNAVAILABLE[name] = top
        _loaded = True


def unavailable_modules() -> dict[str, str]:
    """Experiment modules that could not be imported, with the optional package each lacks."""
    _load()
    return dict(_UNAVAILABLE)


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
    if name not in _REGISTRY and _UNAVAILABLE:
        lacking = tuple(sorted(set(_UNAVAILABLE.values())))
        raise ValueError(
            f"unknown experiment {name!r}; valid options are: "
            f"{', '.join(map(repr, _REGISTRY))}. Some experiment modules could not be "
            f"imported ({', '.join(sorted(_UNAVAILABLE))}): {_install_hint(lacking)}"
        )
    check_choice(name, "experiment", _REGISTRY)
    return _REGISTRY[name]


def run_experiment(name: str, quick: bool = True) -> Result:
    """Run the experiment ``name`` and return its Result."""
    return get_experiment(name).run(quick)
