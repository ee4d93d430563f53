"""The Result object every experiment returns: tables, figures and a short text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from matplotlib.figure import Figure

__all__ = ["VERDICTS", "Claim", "Figure", "Result", "Table", "Verdict", "seed_std"]

#: How our number compares with the source document's claim.
Verdict = Literal["reproduced", "not reproduced", "inconclusive"]
VERDICTS: tuple[str, ...] = get_args(Verdict)


def seed_std(values: Sequence[float]) -> float | None:
    """The standard deviation of ``values`` over seeds, or ``None`` (shown as "-") when there
    are fewer than two: a single seed has no spread, and 0 would look like a measured one."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        return None
    mean = sum(vals) / len(vals)
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))


@dataclass
class Table:
    """A titled table: ``columns`` names and ``rows`` of values (numbers, strings, or ``None``
    for "no value", shown as "-")."""

    title: str
    columns: list[str]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {i} has {len(row)} values but there are "
                    f"{len(self.columns)} columns."
                )

    def column(self, name: str) -> list[Any]:
        """The values of column ``name``."""
        j = self.columns.index(name)
        return [row[j] for row in self.rows]


@dataclass
class Claim:
    """A claim of a source document next to our measurement of it.

    Attributes:
        claim: what the source document says, in one sentence.
        ours: our number(s), as text (e.g. ``"MSE 0.012 vs 0.031 for the Laplace kernel"``).
        verdict: ``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"``; it must be
            computed from the data. Reports show any verdict of a quick run as "inconclusive
            (quick mode)", since quick modes are smoke tests, not evidence.
        source: where the claim is made (document, section), optional.
    """

    claim: str
    ours: str
    verdict: Verdict
    source: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"verdict must be one of {', '.join(map(repr, VERDICTS))}, got {self.verdict!r}."
            )


@dataclass
class Result:
    """What an experiment produced.

    Attributes:
        name: registry name of the experiment.
        title: a human title.
        summary: a few sentences saying what was found (Markdown).
        tables: result tables.
        figures: ``(caption, matplotlib Figure)`` pairs.
        metrics: headline numbers, for tests and for the report's summary table.
        claims: the source documents' claims this experiment tests, with our numbers and a
            verdict each.
        quick: whether this was the quick (CI-sized) version.
    """

    name: str
    title: str
    summary: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Figure]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    quick: bool = True
