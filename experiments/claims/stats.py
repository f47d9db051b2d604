"""The statistics the readings use, from scipy.

* :func:`paired_difference`: the mean of paired differences with a two-sided
  Student's t interval (n - 1 degrees of freedom), for runs paired by seed;
* :func:`fisher_exact`: the two-sided p-value of Fisher's exact test on a
  2 x 2 table of counts (e.g. failed / not, with / without the constraint).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import scipy.stats

__all__ = ["PairedDifference", "fisher_exact", "interval", "mean_present", "paired_difference"]


def mean_present(values: Iterable[float | None]) -> float | None:
  """The mean of the values that are not None (a diverged run's accuracy, a missing
  epoch); None if there are none."""
  present = [v for v in values if v is not None]
  return statistics.mean(present) if present else None


class PairedDifference(NamedTuple):
  """Mean of paired differences ``b - a`` and its t interval.

  Attributes:
    n: number of pairs.
    mean: mean difference.
    std: sample standard deviation of the differences.
    low: lower end of the interval.
    high: upper end of the interval.
    confidence: the interval's confidence level.
  """
  n: int
  mean: float
  std: float
  low: float
  high: float
  confidence: float

  @property
  def contains_zero(self) -> bool:
    return self.low <= 0 <= self.high


def paired_difference(pairs: Sequence[tuple[float, float]], confidence: float = 0.95
                      ) -> PairedDifference | None:
  """The mean of ``b - a`` over ``(a, b)`` pairs, with a t interval on n - 1 degrees of
  freedom; None with fewer than 2 pairs (no interval)."""
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
  diffs = [b - a for a, b in pairs]
  if len(diffs) < 2:
    return None
  mean, std = statistics.mean(diffs), statistics.stdev(diffs)
  t = scipy.stats.t.ppf((1 + confidence) / 2, len(diffs) - 1)
  half = float(t) * std / math.sqrt(len(diffs))
  return PairedDifference(len(diffs), mean, std, mean - half, mean + half, confidence)


def interval(d: PairedDifference | None, spec: str = "+.3f") -> str:
  """``+0.012 [-0.004, +0.028]``: a paired difference and its interval ("–" if None)."""
  if d is None:
    return "–"
  return f"{d.mean:{spec}} [{d.low:{spec}}, {d.high:{spec}}]"


def fisher_exact(a_hits: int, a_total: int, b_hits: int, b_total: int) -> float:
  """Two-sided p-value of Fisher's exact test: ``a_hits`` of ``a_total`` against
  ``b_hits`` of ``b_total``."""
  if not (0 <= a_hits <= a_total and 0 <= b_hits <= b_total):
    raise ValueError(f"counts must satisfy 0 <= hits <= total, got {a_hits}/{a_total}, "
                     f"{b_hits}/{b_total}.")
  table = [[a_hits, a_total - a_hits], [b_hits, b_total - b_hits]]
  return float(scipy.stats.fisher_exact(table).pvalue)
