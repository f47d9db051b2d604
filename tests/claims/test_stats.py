"""t intervals and Fisher's exact test against published values."""

import math
import statistics

import pytest

from experiments.claims.stats import (
    fisher_exact,
    paired_difference,
    t_cdf_two_sided,
    t_critical,
)

# Two-sided 95% critical values of Student's t (any t table).
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228,
           29: 2.045, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df, value", sorted(T_TABLE.items()))
def test_t_critical_matches_the_table(df, value):
  assert t_critical(df) == pytest.approx(value, abs=5e-4)


def test_t_cdf_is_the_cauchy_at_one_degree_and_approaches_the_normal():
  assert t_cdf_two_sided(1.0, 1) == pytest.approx(0.5)  # 2 atan(1) / pi.
  assert t_cdf_two_sided(0.0, 7) == 0.0
  assert t_critical(10_000) == pytest.approx(1.96, abs=1e-3)
  assert t_critical(4, 0.99) == pytest.approx(4.604, abs=5e-4)


def test_paired_difference_is_the_mean_difference_with_a_t_interval():
  pairs = [(0.50, 0.52), (0.49, 0.50), (0.51, 0.515), (0.48, 0.50), (0.52, 0.53)]
  d = paired_difference(pairs)
  diffs = [b - a for a, b in pairs]
  half = 2.776 * statistics.stdev(diffs) / math.sqrt(5)
  assert d.n == 5 and d.mean == pytest.approx(0.013)
  assert (d.low, d.high) == pytest.approx((0.013 - half, 0.013 + half), abs=1e-5)
  assert not d.contains_zero
  assert paired_difference([(0.5, 0.51), (0.5, 0.49)]).contains_zero


def test_fewer_than_two_pairs_give_no_interval():
  assert paired_difference([(0.5, 0.6)]) is None
  assert paired_difference([]) is None


@pytest.mark.parametrize("counts, p", [
    ((3, 3, 0, 3), 0.1), ((5, 5, 0, 5), 2 / 252), ((0, 3, 0, 3), 1.0), ((1, 3, 1, 3), 1.0),
    ((8, 10, 2, 10), 0.023),  # R: fisher.test(matrix(c(8, 2, 2, 8), 2))$p.value
])
def test_fisher_exact_matches_published_values(counts, p):
  assert fisher_exact(*counts) == pytest.approx(p, abs=5e-4)


def test_bad_inputs_are_clear_errors():
  with pytest.raises(ValueError, match="df must be an integer >= 1"):
    t_critical(0)
  with pytest.raises(ValueError, match="hits <= total"):
    fisher_exact(4, 3, 0, 3)
