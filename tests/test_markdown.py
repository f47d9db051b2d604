"""Numbers and tables as Markdown."""

import math

from experiments.markdown import Column, columns_table, mean_std, number, row, spread, table


def test_numbers_missing_values_and_means():
  assert (number(0.12345), number(None), number(math.nan), number(3, "d")) == (
      "0.123", "–", "NaN", "3")
  assert mean_std([0.5, None, 0.7]) == "0.600 ± 0.141"
  assert (mean_std([0.5]), mean_std([None]), mean_std([])) == ("0.500", "–", "–")


def test_spread_is_the_median_and_range():
  assert spread([1.0, 3.0, 2.0, 10.0], ".1f") == "2.5 (1.0..10.0)"
  assert spread([5.0, 7.5, 10.0], "+.1f", "%") == "+7.5% (+5.0%..+10.0%)"


def test_a_table_from_rows_or_from_column_specs():
  expected = "| n | square |\n|---|---|\n| 2 | 4 |\n| 3 | 9 |"
  assert table(["n", "square"], [[2, 4], [3, 9]]) == expected
  assert columns_table([Column("n", str), Column("square", lambda n: str(n * n))], [2, 3]) == (
      expected)
  assert row(["a", 1]) == "| a | 1 |"
