"""Tiling over example pairs under memory_budget, and the diagonal spatial layout."""

from __future__ import annotations

import torch

import kernelens.infinite as inf
from kernelens.infinite import _network


def _gap_cnn():
    return inf.serial(
        inf.Conv(4, (3, 3), padding="SAME", b_std=0.1), inf.Relu(),
        inf.Conv(4, (3, 3), padding="CIRCULAR"), inf.Erf(), inf.GlobalAvgPool(), inf.Dense(1),
    )  # fmt: skip


def _flatten_cnn():
    return inf.serial(
        inf.Conv(4, (3, 3), padding="SAME", b_std=0.1), inf.Relu(),
        inf.Conv(4, (3, 3), strides=(2, 2)), inf.Relu(), inf.Flatten(), inf.Dense(1),
    )  # fmt: skip


def test_tiled_equals_untiled(rng):
    x1 = torch.from_numpy(rng.normal(size=(11, 2, 6, 6)))
    x2 = torch.from_numpy(rng.normal(size=(7, 2, 6, 6)))
    net = _gap_cnn()
    small = 1 << 20  # about a dozen pairs per tile: many tiles
    assert _network._pair_bytes(net, x1, diagonal=False) * 16 > small
    for b in (None, x2):
        whole = net.kernel(x1, b)
        tiled = net.kernel(x1, b, memory_budget=small)
        torch.testing.assert_close(tiled.ntk, whole.ntk, rtol=1e-13, atol=0)
        torch.testing.assert_close(tiled.nngp, whole.nngp, rtol=1e-13, atol=0)
    sym = net.kernel(x1, memory_budget=small)
    assert torch.equal(sym.ntk, sym.ntk.T)


def test_flatten_networks_keep_only_same_position_entries(rng):
    assert not _flatten_cnn().needs_full
    assert _gap_cnn().needs_full
    assert inf.serial(inf.Conv(2, (2, 2)), inf.AvgPool((2, 2)), inf.Flatten()).needs_full
    # same numbers from the diagonal layout and from the full one
    x = torch.from_numpy(rng.normal(size=(4, 2, 6, 6)))
    net = _flatten_cnn()
    diag = net.kernel(x)
    from kernelens.infinite._state import input_state

    full = net.apply(input_state(x, None, diagonal=False, want_ntk=True))
    torch.testing.assert_close(full.ntk, diag.ntk, rtol=1e-13, atol=0)
    torch.testing.assert_close(full.nngp, diag.nngp, rtol=1e-13, atol=0)


def test_large_images_with_flatten_stay_small(rng):
    """32x32 images: the full layout would need 32^4 entries per pair (8 MiB in float64); the
    diagonal layout needs 32^2, so a 4 MiB budget still tiles into whole-row blocks."""
    x = torch.from_numpy(rng.normal(size=(6, 1, 32, 32)))
    net = _flatten_cnn()
    per_pair = _network._pair_bytes(net, x, diagonal=not net.needs_full)
    assert per_pair < 1 << 20
    k = net.kernel(x, get="ntk", memory_budget=4 << 20)
    assert k.shape == (6, 6) and torch.isfinite(k).all()
