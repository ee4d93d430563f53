"""Metrics of the text experiment with bootstrap confidence intervals: perplexity over test
windows, BLEU / chrF (sacrebleu, 0-100 scale) over prompts, and the share of generated words
that are real words of the corpus."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["bootstrap", "corpus_metric", "real_word_rate", "word_set"]


def corpus_metric(name: str, hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus ``"BLEU"`` or ``"chrF"`` (sacrebleu, 0-100) of ``hyps`` against ``refs``."""
    import sacrebleu  # optional: kernelens[experiments]

    if name == "BLEU":
        return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)
    if name == "chrF":
        return float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score)
    raise ValueError(f"name must be 'BLEU' or 'chrF', got {name!r}.")


def bootstrap(stat: Callable[[np.ndarray], float], n: int, reps: int, seed: int) -> np.ndarray:
    """``stat(idx)`` on ``reps`` resamples ``idx [n]`` (with replacement) -> ``[reps]``; the
    same resamples for every call with the same ``(n, reps, seed)``, so differences of two
    models' statistics over one call each are paired."""
    rng = np.random.default_rng(seed)
    return np.array([stat(rng.integers(0, n, n)) for _ in range(reps)])


def word_set(text: str) -> set[str]:
    """The words (runs of letters and apostrophes) of ``text``."""
    return set(re.findall(r"[a-z']+", text))


def real_word_rate(hyps: Sequence[str], words: set[str]) -> float:
    """Share of the complete words in ``hyps`` (the last, possibly cut, word of each dropped)
    that belong to ``words``; NaN if there are none."""
    total = hits = 0
    for h in hyps:
        toks = re.findall(r"[a-z']+", h)[:-1]
        total += len(toks)
        hits += sum(t in words for t in toks)
    return hits / total if total else float("nan")
