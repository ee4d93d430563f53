"""The empirical neural tangent kernel of any PyTorch model.

Public entry points: :func:`empirical_ntk`, :func:`explain`, and the engine primitives other
packages build on: :func:`jacobian_factors`, :func:`contract`, :func:`dense_dot`,
:class:`Factors`, :func:`jvp`, :func:`vjp`. See docs/ntk.md for the methods and the math.
"""

from .engine import empirical_ntk, explain, jacobian_factors, jvp, vjp
from .factors import Factors, contract, dense_dot

__all__ = [
    "Factors",
    "contract",
    "dense_dot",
    "empirical_ntk",
    "explain",
    "jacobian_factors",
    "jvp",
    "vjp",
]
