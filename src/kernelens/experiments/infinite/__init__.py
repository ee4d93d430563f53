"""Experiments on infinite-width kernels (seed 001, "Deconstructing the Machine"): each module
registers its experiments with :func:`kernelens.experiments.register` when imported."""

from . import architecture, dropout, normalisation, smoothness  # noqa: F401 - registration on import
