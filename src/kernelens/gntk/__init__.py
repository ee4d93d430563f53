"""The global empirical NTK over hidden states (seed 002): ``NTK_S = R P K P^T R^T``.

A model's states ``h`` (every hidden state of every example, time step or layer) solve one
implicit constraint ``F(h, theta, x) = 0``; ``P = (dF/dh)^-1`` propagates state to state,
``K = (dF/dtheta)(dF/dtheta)^T`` is the immediate parameter-to-state interaction, and
``NTK_S = J J^T = P K P^T`` with ``J = dh/dtheta``. Everything is matrix-free; ``K`` of a
recurrent cell is its Kronecker core ``sum_g B_g (Z_g Z_g^T (x) I) B_g^T``. See docs/gntk.md.
"""

from ._global import K_METHODS, GlobalNTK, SelectionOperator, global_ntk
from .analysis import alignment

__all__ = ["K_METHODS", "GlobalNTK", "SelectionOperator", "alignment", "global_ntk"]
