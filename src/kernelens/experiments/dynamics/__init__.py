"""Experiments of kernelens.dynamics (source document 001): data geometry, training diagnosis,
universality, NTK diagonal vs saliency, quantum error-correction decoders."""

from . import geometry, saliency, universality

__all__ = ["geometry", "saliency", "universality"]
