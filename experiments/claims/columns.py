"""The quantities the reports tabulate, as table columns.

A :class:`Quantity` is a header and a run's value; :func:`each` makes it a
column of a per-run table (the value) and :func:`mean` a column of a
per-group table (mean ± std over the group's runs). An experiment's table is
then one list of columns (see :func:`experiments.markdown.columns_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from experiments.claims.results import CONVS, DENSE, RunResult, largest_norm
from experiments.markdown import Column, mean_std, number

__all__ = ["CONV_MAX", "FRACTION", "GAP", "TEST_ACC", "TEST_LOSS", "TRAIN_ACC", "VAL_ACC",
           "VAL_LOSS", "WALL", "Group", "Quantity", "dense_norm", "each", "key", "mean"]

K = TypeVar("K")
Group = tuple[K, Sequence[RunResult]]  # A group's key (an arm, a setting) and its runs.


class Quantity(NamedTuple):
  """What a column shows: its header, and the value of one run (None if missing)."""
  header: str
  value: Callable[[RunResult], Any]


VAL_ACC = Quantity("val acc", lambda r: r.get("val_accuracy"))
TEST_ACC = Quantity("test acc", lambda r: r.get("test_accuracy"))
TRAIN_ACC = Quantity("train acc", lambda r: r.train_accuracy)
GAP = Quantity("train − val", lambda r: r.train_val_gap)
VAL_LOSS = Quantity("val loss", lambda r: r.get("val_loss"))
TEST_LOSS = Quantity("test loss", lambda r: r.get("test_loss"))
FRACTION = Quantity("fraction at bound", lambda r: r.last_epoch.get("fraction_at_bound"))
WALL = Quantity("wall s", lambda r: r.get("total_seconds"))
CONV_MAX = Quantity("conv max norm", lambda r: largest_norm(r.last_epoch, CONVS))


def dense_norm(dense: str, stat: str = "max") -> Quantity:
  """The dense layer's ``stat`` (max or mean) neuron norm after the last epoch."""
  return Quantity(f"{dense} {stat} norm", lambda r: r.final_norm(DENSE, stat))


def each(q: Quantity, spec: str = ".3f", header: str | None = None) -> Column[RunResult]:
  """``q`` of one run, formatted with ``spec``."""
  return Column(header or q.header, lambda r: number(q.value(r), spec))


def mean(q: Quantity, spec: str = ".3f", header: str | None = None) -> Column[Group]:
  """Mean ± std of ``q`` over a group's runs."""
  return Column(header or q.header, lambda g: mean_std(map(q.value, g[1]), spec))


def key(header: str, text: Callable[[Any], str] = str) -> Column[Group]:
  """A group's key, as ``text`` writes it."""
  return Column(header, lambda g: text(g[0]))
