"""Experiments of kernelens.dynamics (source document 001): data geometry, training diagnosis,
universality, NTK diagonal vs saliency, quantum error-correction decoders."""

from . import diagnosis, geometry, qec, saliency, universality

__all__ = ["diagnosis", "geometry", "qec", "saliency", "universality"]
