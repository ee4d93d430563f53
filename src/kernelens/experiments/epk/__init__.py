"""Exact Path Kernel experiments (:mod:`.exact_path`)."""
