"""The empirical neural tangent kernel of any PyTorch model.

Public entry points: :func:`empirical_ntk`, :func:`explain`, and the engine primitives other
packages build on: :func:`jacobian_factors`, :func:`contract`, :func:`dense_dot`,
:class:`Factors`, :func:`jvp`, :func:`vjp`; :class:`NTKOperator` and :func:`spectrum`;
:func:`select_output` for models with dict or tuple outputs; the named refusals
:class:`BatchCouplingError` and :class:`RandomForwardError`. See docs/ntk.md for the methods
and the math.
"""

from ._model import BatchCouplingError, RandomForwardError, select_output
from .engine import empirical_ntk, explain, jacobian_factors, jvp, vjp
from .factors import Factors, contract, dense_dot
from .operator import NTKOperator
from .spectrum import NTKSpectrum, spectrum

__all__ = [
    "BatchCouplingError",
    "Factors",
    "NTKOperator",
    "NTKSpectrum",
    "RandomForwardError",
    "contract",
    "dense_dot",
    "empirical_ntk",
    "explain",
    "jacobian_factors",
    "jvp",
    "select_output",
    "spectrum",
    "vjp",
]
