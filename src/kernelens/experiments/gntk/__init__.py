"""Experiments of the global (hidden-state) NTK, seed 002; each module registers one."""

from . import initialisation, low_rank, self_referential, space_time, transformer

__all__ = ["initialisation", "low_rank", "self_referential", "space_time", "transformer"]
