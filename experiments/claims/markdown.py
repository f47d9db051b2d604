"""Numbers and tables as Markdown: the formatting every report shares.

A missing number (an incomplete run, a diverged run's ``null``) prints as
"–"; a mean over seeds prints as "mean ± sample std".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from experiments.claims.stats import PairedDifference

__all__ = ["bound_text", "interval", "mean_std", "number", "table"]


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


def interval(d: PairedDifference | None, spec: str = "+.3f") -> str:
  """``+0.012 [-0.004, +0.028]``: a paired difference and its interval ("–" if None)."""
  if d is None:
    return "–"
  return f"{d.mean:{spec}} [{d.low:{spec}}, {d.high:{spec}}]"


def bound_text(c: float | None) -> str:
  """A max-norm bound for a table: ``3``, ``1.5``, or ``∞`` (no constraint)."""
  return "∞" if c is None or math.isinf(c) else f"{c:g}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)
