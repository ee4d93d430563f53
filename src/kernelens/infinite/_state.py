"""The kernel state that flows through a network description, one tile of example pairs at a time.

A state holds, for a block of examples ``x1`` (``n1`` of them) and a block ``x2`` (``n2``):

- ``nngp`` ``[n1, n2, *P]``: second moments ``E[f_c(x) f_c(x')]`` of one channel, averaged over
  channels;
- ``ntk`` ``[n1, n2, *P]`` or None when the NTK was not asked for;
- ``var1`` ``[n1, *P]`` / ``var2`` ``[n2, *P]``: the same second moments of each example with
  itself (``var2`` is None when the two blocks are the same examples: then both are read off the
  batch diagonal of ``nngp``, so ``nngp[i, i]`` and the variances agree bit for bit and the angle
  at ``x = x'`` is exactly zero);
- ``mean1`` / ``mean2`` ``[n, *S]``: the channel-averaged first moments ``E[f_c(x)]`` per position
  (zero after an affine layer), used by centring (LayerNorm) and by sums of branches.

The spatial layout ``P`` is ``()`` without spatial axes, ``S = (H, W)`` (or ``(L,)``) when only
same-position entries are kept (``diagonal``), and ``S + S`` (``[H, W, H', W']``: the positions of
``x`` then those of ``x'``) when all position pairs are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["KernelState", "input_state"]


@dataclass(frozen=True)
class KernelState:
    nngp: torch.Tensor
    ntk: torch.Tensor | None
    var1_: torch.Tensor | None
    var2_: torch.Tensor | None
    mean1: torch.Tensor
    mean2: torch.Tensor
    spatial: tuple[int, ...]
    diagonal: bool
    channels: int
    same: bool
    gaussian: bool = False
    iid: bool = True
    fresh: bool = True
    is_input: bool = True

    # ---- views -----------------------------------------------------------------------------
    @property
    def var1(self) -> torch.Tensor:
        if self.same:
            return self.nngp.diagonal(0, 0, 1).movedim(-1, 0)
        assert self.var1_ is not None
        return self.var1_

    @property
    def var2(self) -> torch.Tensor:
        if self.same:
            return self.var1
        assert self.var2_ is not None
        return self.var2_

    @property
    def ndim_spatial(self) -> int:
        return len(self.spatial)

    def position_variances(self, which: int) -> torch.Tensor:
        """``E[f(x, p)^2]`` per example and position ``[n, *S]``."""
        v = self.var1 if which == 1 else self.var2
        return _pos_diagonal(v, self.ndim_spatial, self.diagonal, batch_ndim=1)

    def replace(self, **changes) -> KernelState:
        return replace(self, **changes)

    def map_covariances(self, fn, *, ntk_fn=None) -> KernelState:
        """Apply ``fn(cov, batch_ndim)`` to nngp, var1 and var2; ``ntk_fn`` (default ``fn``) to
        the NTK."""
        ntk_fn = fn if ntk_fn is None else ntk_fn
        if self.same:
            return self.replace(
                nngp=fn(self.nngp, 2), ntk=None if self.ntk is None else ntk_fn(self.ntk, 2)
            )
        return self.replace(
            nngp=fn(self.nngp, 2),
            ntk=None if self.ntk is None else ntk_fn(self.ntk, 2),
            var1_=fn(self.var1_, 1),
            var2_=fn(self.var2_, 1),
        )


def _pos_diagonal(v: torch.Tensor, d: int, diagonal: bool, batch_ndim: int) -> torch.Tensor:
    """The same-position entries ``[*batch, *S]`` of a covariance in either layout."""
    if diagonal or d == 0:
        return v
    for k in range(d):
        # the remaining x axes start at batch_ndim; the partner of the first is d - k later;
        # diagonal() appends the extracted axis, so the S axes end up last and in order
        v = v.diagonal(0, batch_ndim, batch_ndim + d - k)
    return v


def input_state(
    x1: torch.Tensor, x2: torch.Tensor | None, *, diagonal: bool, want_ntk: bool
) -> KernelState:
    """The kernel of the inputs: channel-averaged inner products (``x . x' / C`` per position
    pair), the NTK starting at zero. ``x`` is ``[n, C]`` or ``[n, C, *S]`` (NCHW)."""
    c = x1.shape[1]
    spatial = tuple(x1.shape[2:])
    d = len(spatial)
    letters = "hwlijk"[:d]
    primes = "HWLIJK"[:d]
    same = x2 is None
    other = x1 if same else x2

    def gram(a: torch.Tensor, b: torch.Tensor, paired_batch: bool) -> torch.Tensor:
        bl = "n" if paired_batch else "m"
        if diagonal or d == 0:
            expr = f"nc{letters},{bl}c{letters}->n{'' if paired_batch else 'm'}{letters}"
        else:
            expr = f"nc{letters},{bl}c{primes}->n{'' if paired_batch else 'm'}{letters}{primes}"
        return torch.einsum(expr, a, b) / c

    nngp = gram(x1, other, False)
    var1 = var2 = None
    if not same:
        var1 = gram(x1, x1, True)
        var2 = gram(x2, x2, True)
    zeros1 = x1.new_zeros((x1.shape[0], *spatial))
    zeros2 = other.new_zeros((other.shape[0], *spatial))
    return KernelState(
        nngp=nngp,
        ntk=torch.zeros_like(nngp) if want_ntk else None,
        var1_=var1,
        var2_=var2,
        mean1=zeros1,
        mean2=zeros2,
        spatial=spatial,
        diagonal=diagonal,
        channels=c,
        same=same,
        gaussian=False,
        iid=True,
        fresh=True,
        is_input=True,
    )
