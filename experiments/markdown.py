"""Numbers and tables as Markdown, for every results page and benchmark report.

A missing number (an incomplete run, a diverged run's ``null``) prints as
"–"; a mean over seeds as "mean ± sample std"; repeated measurements as
"median (min..max)". A table is either a header and rows, or a list of
:class:`Column` specs (a header and the function that fills its cell), so a
header can never drift away from its cells.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["Column", "columns_table", "mean_std", "number", "row", "spread", "table"]

T = TypeVar("T")


def number(x: float | None, spec: str = ".3f") -> str:
  """``x`` formatted with ``spec``; "–" for None, "NaN" for NaN."""
  if x is None:
    return "–"
  if isinstance(x, float) and math.isnan(x):
    return "NaN"
  return f"{x:{spec}}"


def mean_std(values: Iterable[float | None], spec: str = ".3f") -> str:
  """"mean ± sample std" of the values that are not None (one value: itself; none: "–")."""
  present = [v for v in values if v is not None]
  if not present:
    return "–"
  if len(present) == 1:
    return number(present[0], spec)
  return f"{number(statistics.mean(present), spec)} ± {number(statistics.stdev(present), spec)}"


def spread(values: Sequence[float], spec: str, unit: str = "") -> str:
  """``median (min..max)`` of ``values``, each formatted with ``spec`` and followed by
  ``unit``: ``+7.5% (+5.0%..+10.0%)``."""
  med, low, high = (format(v, spec) + unit
                    for v in (statistics.median(values), min(values), max(values)))
  return f"{med} ({low}..{high})"


def row(cells: Iterable[Any]) -> str:
  """One Markdown table row: ``| a | b |``."""
  return "| " + " | ".join(map(str, cells)) + " |"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A Markdown table."""
  return "\n".join([row(header), "|" + "---|" * len(header), *map(row, rows)])


class Column(NamedTuple, Generic[T]):
  """A table column: its header, and its cell for one item."""
  header: str
  cell: Callable[[T], str]


def columns_table(columns: Sequence[Column[T]], items: Iterable[T]) -> str:
  """The Markdown table with one row per item and one cell per column."""
  return table([c.header for c in columns], ([c.cell(item) for c in columns] for item in items))
