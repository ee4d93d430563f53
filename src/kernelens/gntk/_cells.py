"""The step functions of torch's recurrent cells in pre-activation form.

Every cell of ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` is written as

    s_t = head(s_{t-1}, {a_g}),    a_g = sum_blocks  source_block @ W_block^T

where each *site group* ``g`` collects weight blocks (rows of ``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``) whose pre-activation feeds the head through one derivative map
``B_g = d head / d a_g``. The sources are the input ``x_t`` (or the layer below), the previous
hidden ``h_{t-1}`` and the constant 1, so ``d s_t / d W_g = B_g (z_t^T (x) I)`` with the site
vector ``z_t = [sources]``: the structure behind the Kronecker core of :mod:`kernelens.gntk`.
The rollout of the module and the operators use this one description.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Block", "LayerCell", "SiteGroup", "layer_cells"]

Head = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Block:
    """Rows ``rows`` of parameter ``param`` act on the site variable ``source``."""

    param: str
    rows: slice
    source: str  # "x" (layer input), "h" (previous hidden) or "1" (bias)


@dataclass(frozen=True)
class SiteGroup:
    """Weight blocks sharing one derivative map ``B_g``; ``width`` pre-activation units."""

    name: str
    width: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class LayerCell:
    """One layer of a recurrent module: state ``[r, C * H]`` (h, then c for an LSTM)."""

    kind: str
    hidden: int
    inputs: int
    channels: int
    groups: tuple[SiteGroup, ...]
    head: Head

    @property
    def width(self) -> int:
        """Size ``C * H`` of the layer's state."""
        return self.channels * self.hidden

    def source(self, name: str, state: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """The site variable ``name`` at ``r`` sites: ``[r, d]``."""
        if name == "x":
            return inp
        if name == "h":
            return state[..., : self.hidden]
        return torch.ones(*state.shape[:-1], 1, dtype=state.dtype, device=state.device)

    def pre(
        self,
        state: torch.Tensor,
        inp: torch.Tensor,
        params: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Pre-activations ``{group: [r, width]}`` at states ``[r, C H]`` and inputs ``[r, I]``."""
        out = {}
        for g in self.groups:
            a = None
            for b in g.blocks:
                w = params[b.param][b.rows]
                term = w if b.source == "1" else self.source(b.source, state, inp) @ w.T
                a = term if a is None else a + term
            out[g.name] = a
        return out

    def step(
        self, state: torch.Tensor, inp: torch.Tensor, params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``s_t [r, C H]`` from ``s_{t-1} [r, C H]`` and the layer input ``[r, I]``."""
        return self.head(state, self.pre(state, inp, params))

    def sites(
        self,
        group: SiteGroup,
        state: torch.Tensor,
        inp: torch.Tensor,
        selected: Sequence[str],
    ) -> torch.Tensor | None:
        """``Z_g [r, d_g]``: the sources of the blocks whose parameter is in ``selected``
        (None if the group has none)."""
        cols = [self.source(b.source, state, inp) for b in group.blocks if b.param in selected]
        return torch.cat(cols, dim=-1) if cols else None


def _rnn_head(phi: Callable[[torch.Tensor], torch.Tensor]) -> Head:
    def head(state, pre):
        return phi(pre["gates"])

    return head


def _gru_head(hidden: int) -> Head:
    def head(state, pre):
        rz = torch.sigmoid(pre["rz"])
        r, z = rz[..., :hidden], rz[..., hidden:]
        n = torch.tanh(pre["n_x"] + r * pre["n_h"])
        return (1 - z) * n + z * state

    return head


def _lstm_head(hidden: int) -> Head:
    def head(state, pre):
        a = pre["gates"]
        i, f, g, o = (a[..., k * hidden : (k + 1) * hidden] for k in range(4))
        c = torch.sigmoid(f) * state[..., hidden:] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([h, c], dim=-1)

    return head


def _blocks(layer: int, rows: slice, sources: str, bias: bool) -> tuple[Block, ...]:
    """Blocks of ``weight_ih``/``weight_hh`` (sources "x", "h") and their biases."""
    out = []
    for src in sources:
        kind = "ih" if src == "x" else "hh"
        out.append(Block(f"weight_{kind}_l{layer}", rows, src))
    if bias:
        for src in sources:
            kind = "ih" if src == "x" else "hh"
            out.append(Block(f"bias_{kind}_l{layer}", rows, "1"))
    return tuple(out)


def _check_supported(module: nn.RNNBase) -> None:
    name = type(module).__name__
    if not module.batch_first:
        raise ValueError(
            f"the {name} module has batch_first=False; kernelens.gntk needs batch-first inputs "
            f"x [B, T, I]. Construct it with {name}(..., batch_first=True) (the parameters are "
            "the same, so you can load_state_dict the old one) and pass x as [B, T, I]."
        )
    if module.bidirectional:
        raise ValueError(
            f"the {name} module is bidirectional, whose states are not a causal recursion; "
            "kernelens.gntk supports unidirectional modules (bidirectional=False)."
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            "the LSTM has proj_size > 0, which kernelens.gntk does not support; use proj_size=0."
        )
    if module.training and module.dropout > 0 and module.num_layers > 1:
        raise ValueError(
            f"the {name} module applies dropout between layers in training mode, so its states "
            "are random; call module.eval() first (or set dropout=0)."
        )


def layer_cells(module: nn.RNNBase) -> list[LayerCell]:
    """The pre-activation description of every layer of ``module`` (nn.RNN / GRU / LSTM)."""
    _check_supported(module)
    hdim, bias = module.hidden_size, module.bias
    cells = []
    for layer in range(module.num_layers):
        inputs = module.input_size if layer == 0 else hdim
        if isinstance(module, nn.LSTM):
            groups = (SiteGroup("gates", 4 * hdim, _blocks(layer, slice(None), "xh", bias)),)
            cells.append(LayerCell("lstm", hdim, inputs, 2, groups, _lstm_head(hdim)))
        elif isinstance(module, nn.GRU):
            groups = (
                SiteGroup("rz", 2 * hdim, _blocks(layer, slice(0, 2 * hdim), "xh", bias)),
                SiteGroup("n_x", hdim, _blocks(layer, slice(2 * hdim, None), "x", bias)),
                SiteGroup("n_h", hdim, _blocks(layer, slice(2 * hdim, None), "h", bias)),
            )
            cells.append(LayerCell("gru", hdim, inputs, 1, groups, _gru_head(hdim)))
        else:
            phi = torch.tanh if module.nonlinearity == "tanh" else torch.relu
            groups = (SiteGroup("gates", hdim, _blocks(layer, slice(None), "xh", bias)),)
            cells.append(
                LayerCell(f"rnn_{module.nonlinearity}", hdim, inputs, 1, groups, _rnn_head(phi))
            )
    return cells
