"""Experiments of the global (hidden-state) NTK, seed 002; each module registers one."""

from . import low_rank, self_referential, space_time

__all__ = ["low_rank", "self_referential", "space_time"]
