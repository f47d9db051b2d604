"""t intervals and Fisher's exact test against published values."""

import math
import statistics

import pytest

from experiments.claims.stats import fisher_exact, interval, paired_difference

# Two-sided 95% critical values of Student's t (any t table).
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228,
           29: 2.045, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df, value", sorted(T_TABLE.items()))
def test_the_interval_uses_the_t_tables_critical_value(df, value):
  diffs = [0.01 * (i % 3) for i in range(df + 1)]  # n = df + 1 pairs.
  d = paired_difference([(0.5, 0.5 + x) for x in diffs])
  se = statistics.stdev(diffs) / math.sqrt(df + 1)
  assert d.n == df + 1 and d.mean == pytest.approx(statistics.mean(diffs))
  assert (d.high - d.low) / 2 / se == pytest.approx(value, abs=5e-4)


def test_a_99_percent_interval_is_wider():
  pairs = [(0.5, 0.52), (0.5, 0.51), (0.5, 0.53), (0.5, 0.50), (0.5, 0.52)]
  wide, narrow = paired_difference(pairs, 0.99), paired_difference(pairs)
  se = statistics.stdev(b - a for a, b in pairs) / math.sqrt(5)
  assert (wide.high - wide.low) / 2 / se == pytest.approx(4.604, abs=5e-4)
  assert wide.low < narrow.low and wide.confidence == 0.99


def test_paired_difference_is_the_mean_difference_with_a_t_interval():
  pairs = [(0.50, 0.52), (0.49, 0.50), (0.51, 0.515), (0.48, 0.50), (0.52, 0.53)]
  d = paired_difference(pairs)
  diffs = [b - a for a, b in pairs]
  half = 2.776 * statistics.stdev(diffs) / math.sqrt(5)
  assert d.n == 5 and d.mean == pytest.approx(0.013)
  assert (d.low, d.high) == pytest.approx((0.013 - half, 0.013 + half), abs=1e-5)
  assert not d.contains_zero
  assert paired_difference([(0.5, 0.51), (0.5, 0.49)]).contains_zero
  assert interval(d) == "+0.013 [+0.005, +0.021]" and interval(None) == "–"


def test_equal_differences_give_a_zero_width_interval():
  d = paired_difference([(0.5, 0.52)] * 3)
  assert d.low == pytest.approx(0.02) and d.high == pytest.approx(0.02)


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
  with pytest.raises(ValueError, match="confidence must be in"):
    paired_difference([(0.5, 0.6), (0.5, 0.7)], 1.0)
  with pytest.raises(ValueError, match="hits <= total"):
    fisher_exact(4, 3, 0, 3)
