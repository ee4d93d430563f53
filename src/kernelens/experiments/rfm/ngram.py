"""Character n-gram language models with interpolated Kneser-Ney smoothing: the classical
baseline of the RFM text experiment (:mod:`kernelens.experiments.rfm.text`).

``P(w | h)`` for a history ``h`` of the last ``order - 1`` characters interpolates, level by
level, a discounted count estimate with the next shorter history (Chen & Goodman 1999):

    P_k(w | h) = max(c_k(h, w) - D, 0) / c_k(h) + D N_k(h) / c_k(h) * P_{k-1}(w | h')

where ``h'`` drops the oldest character, ``N_k(h)`` is the number of distinct ``w`` seen after
``h``, ``c_k`` are raw counts at the top level and continuation counts (the number of distinct
characters seen before ``h w``) below it, and the recursion ends in the uniform distribution,
so every character keeps a non-zero probability. Unseen histories fall back to ``P_{k-1}``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..._validation import check_positive, check_positive_int

__all__ = ["NGramModel"]


class NGramModel:
    """A character n-gram model trained on ``(history, next character)`` pairs.

    Args:
        order: ``n`` (2 = bigram, 3 = trigram).
        vocab_size: number of characters ``V``; ids are ``0 .. V-1``.
        discount: absolute discount ``D`` in ``(0, 1)`` (0.75 is the usual choice).
    """

    def __init__(self, order: int, vocab_size: int, discount: float = 0.75) -> None:
        self.order = check_positive_int(order, "order", minimum=1)
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.discount = check_positive(discount, "discount")
        if self.discount >= 1:
            raise ValueError(f"discount must be in (0, 1), got {discount!r}.")

    def fit(self, contexts: np.ndarray, targets: np.ndarray) -> NGramModel:
        """Count n-grams from ``contexts [N, >= order - 1]`` (ids, the last columns are the
        most recent characters) and ``targets [N]``."""
        contexts = np.asarray(contexts)
        k = self.order - 1
        if contexts.ndim != 2 or contexts.shape[1] < k:
            raise ValueError(f"contexts must be [N, >= {k}], got shape {contexts.shape}.")
        V = self.vocab_size
        grams = np.concatenate(
            [contexts[:, contexts.shape[1] - k :], np.asarray(targets)[:, None]], 1
        )
        # counts[level][history tuple] -> [V]; level = history length
        self._counts: list[dict[tuple[int, ...], np.ndarray]] = []
        for level in range(self.order):
            table: dict[tuple[int, ...], np.ndarray] = defaultdict(lambda: np.zeros(V))
            if level == k:
                for row in grams:
                    table[tuple(row[:-1])][row[-1]] += 1.0
            else:  # continuation counts: distinct characters before (history, w)
                types = {tuple(row[k - level - 1 :]) for row in grams}
                for t in types:
                    table[t[1:-1]][t[-1]] += 1.0
            self._counts.append(dict(table))
        return self

    def _proba_one(self, history: tuple[int, ...]) -> np.ndarray:
        p = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for level in range(self.order):
            h = history[len(history) - level :] if level else ()
            c = self._counts[level].get(h)
            if c is None:
                continue
            total = c.sum()
            seen = np.count_nonzero(c)
            p = np.maximum(c - self.discount, 0.0) / total + self.discount * seen / total * p
        return p

    def predict_proba(self, contexts: np.ndarray) -> np.ndarray:
        """``P(next | context)`` for ``contexts [m, >= order - 1]`` -> ``[m, V]`` (rows sum to 1)."""
        contexts = np.asarray(contexts)
        k = self.order - 1
        return np.stack(
            [self._proba_one(tuple(row[len(row) - k :]) if k else ()) for row in contexts]
        )
