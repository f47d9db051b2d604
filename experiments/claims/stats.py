"""The few statistics the readings need, in the standard library only.

* :func:`paired_difference`: mean of paired differences with a two-sided
  t interval (n - 1 degrees of freedom), for runs paired by seed;
* :func:`t_critical`: Student's t quantile, from the exact CDF for integer
  degrees of freedom (Abramowitz & Stegun 26.7.3-4), solved by bisection;
* :func:`fisher_exact`: the two-sided p-value of a 2 x 2 table of counts
  (e.g. diverged / not, with / without the constraint).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["PairedDifference", "fisher_exact", "paired_difference", "t_cdf_two_sided",
           "t_critical"]


def t_cdf_two_sided(t: float, df: int) -> float:
  """P(|T| <= t) for Student's t with ``df`` (an integer >= 1) degrees of freedom."""
  if df < 1:
    raise ValueError(f"df must be an integer >= 1, got {df}.")
  theta = math.atan(abs(t) / math.sqrt(df))
  s, c = math.sin(theta), math.cos(theta)
  if df % 2:  # Odd: (2 / pi) * (theta + sin * cos * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)).
    term, total = c, c if df > 1 else 0.0
    for k in range(1, (df - 1) // 2):
      term *= (2 * k) / (2 * k + 1) * c * c
      total += term
    return 2 / math.pi * (theta + s * total)
  term, total = 1.0, 1.0  # Even: sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...).
  for k in range(1, df // 2):
    term *= (2 * k - 1) / (2 * k) * c * c
    total += term
  return s * total


def t_critical(df: int, confidence: float = 0.95) -> float:
  """The t such that P(|T| <= t) = ``confidence`` (12.706 for df 1, 2.776 for df 4)."""
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
  low, high = 0.0, 1.0
  while t_cdf_two_sided(high, df) < confidence:
    high *= 2
  for _ in range(100):  # Bisection to double precision.
    mid = (low + high) / 2
    low, high = (mid, high) if t_cdf_two_sided(mid, df) < confidence else (low, mid)
  return (low + high) / 2


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
  diffs = [b - a for a, b in pairs]
  if len(diffs) < 2:
    return None
  mean, std = statistics.mean(diffs), statistics.stdev(diffs)
  half = t_critical(len(diffs) - 1, confidence) * std / math.sqrt(len(diffs))
  return PairedDifference(len(diffs), mean, std, mean - half, mean + half, confidence)


def fisher_exact(a_hits: int, a_total: int, b_hits: int, b_total: int) -> float:
  """Two-sided p-value of Fisher's exact test: ``a_hits`` of ``a_total`` against
  ``b_hits`` of ``b_total`` (the sum over tables with these margins that are no more
  likely than the observed one)."""
  if not (0 <= a_hits <= a_total and 0 <= b_hits <= b_total):
    raise ValueError(f"counts must satisfy 0 <= hits <= total, got {a_hits}/{a_total}, "
                     f"{b_hits}/{b_total}.")
  hits, total = a_hits + b_hits, a_total + b_total

  def probability(k: int) -> float:  # Hypergeometric: k of the hits fall in a.
    return math.comb(a_total, k) * math.comb(b_total, hits - k) / math.comb(total, hits)

  observed = probability(a_hits)
  ks = range(max(0, hits - b_total), min(hits, a_total) + 1)
  return min(1.0, sum(p for k in ks if (p := probability(k)) <= observed * (1 + 1e-9)))
