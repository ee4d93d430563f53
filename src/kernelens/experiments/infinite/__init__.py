"""Experiments on infinite-width kernels (seed 001, "Deconstructing the Machine"): each module
registers its experiments with :func:`kernelens.experiments.register` when imported."""

from . import architecture, dropout, finite, normalisation, pca, smoothness  # noqa: F401 - registration on import
