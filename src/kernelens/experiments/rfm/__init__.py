"""Recursive Feature Machine experiments: the scaling test (:mod:`.regression`), double
descent (:mod:`.double_descent`), the Neural Feature Ansatz (:mod:`.nfa`), the defaults sweep
(:mod:`.defaults`) and few-shot text (:mod:`.text`, with its n-gram baseline in :mod:`.ngram`
and metrics in :mod:`.textmetrics`)."""
