"""The Result object every experiment returns: tables, figures and a short text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

__all__ = ["Figure", "Result", "Table"]


@dataclass
class Table:
    """A titled table: ``columns`` names and ``rows`` of values (numbers or strings)."""

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
class Result:
    """What an experiment produced.

    Attributes:
        name: registry name of the experiment.
        title: a human title.
        summary: a few sentences saying what was found (Markdown).
        tables: result tables.
        figures: ``(caption, matplotlib Figure)`` pairs.
        metrics: headline numbers, for tests and for the report's summary table.
        quick: whether this was the quick (CI-sized) version.
    """

    name: str
    title: str
    summary: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Figure]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    quick: bool = True
