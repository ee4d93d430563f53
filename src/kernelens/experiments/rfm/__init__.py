"""Recursive Feature Machine experiments: scaling, double descent, the Neural Feature Ansatz
(:mod:`.regression`), the defaults sweep (:mod:`.defaults`) and few-shot text (:mod:`.text`,
with its n-gram baseline in :mod:`.ngram`)."""
