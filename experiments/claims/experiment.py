"""What an experiment is: its runs under a budget, its tables, reading and figures.

Each experiment is one module (``e1_max_norm_vs_none.py``, ...) that defines
``EXPERIMENT``, an :class:`Experiment`, and its design per budget as
:class:`Designs`; :mod:`.registry` lists the modules. The shared machinery
(:mod:`.sweep`, :mod:`.report`) only calls the fields below, so an
experiment's design, tables and claim text live in its module.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from experiments.claims.budgets import Budget, Schedule
from experiments.claims.results import RunResult
from experiments.claims.runs import RunSpec

__all__ = ["Designs", "Experiment", "Plot"]

D = TypeVar("D")


class Designs(dict[str, D], Generic[D]):
  """An experiment's design (its seeds, settings, ...) per budget name, and ``default``
  for every other budget; ``designs(budget)`` is the design of ``budget``."""

  def __init__(self, default: D, per_budget: dict[str, D]):
    super().__init__(per_budget)
    self.default = default

  def __call__(self, budget: Budget) -> D:
    return self.get(budget.name, self.default)


class Plot(NamedTuple):
  """A figure of a report.

  Attributes:
    name: the PNG is ``<budget>_<name>.png`` beside ``results.md``.
    draw: ``draw(results, path, label)`` draws every run of ``results`` it can
      (complete ones, and what a diverged one logged) under the title ``label``
      and returns the path it wrote.
  """
  name: str
  draw: Callable[[Sequence[RunResult], pathlib.Path, str], pathlib.Path]


@dataclasses.dataclass(frozen=True)
class Experiment:
  """An experiment: its runs under a budget, and how its report reads them.

  Attributes:
    key: the command-line name (``e1``).
    slug: directory name under ``experiments/results/`` (also its module's name).
    title: heading of its ``results.md``.
    claim: the paragraph under the heading: what is tested and how.
    schedule: which of the budget's schedules its runs use.
    runs: the runs it makes under a budget, in the order a sweep trains them
      (a cut-short sweep should leave comparable runs, e.g. pairs by seed).
    tables: ``tables(results, budget)``: the Markdown tables of a report
      section (called only when some run is complete; incomplete runs are in
      ``results`` too).
    reading: ``reading(results)``: what the numbers say, as Markdown bullet
      points computed from them ("" when there is nothing to say yet).
    plots: the figures of a section.
    sets_recipe: its runs set the optimizer and learning rate themselves, so
      a report describes the budget without the schedule's.
  """
  key: str
  slug: str
  title: str
  claim: str
  schedule: Schedule
  runs: Callable[[Budget], list[RunSpec]]
  tables: Callable[[Sequence[RunResult], Budget], list[str]]
  reading: Callable[[Sequence[RunResult]], str]
  plots: tuple[Plot, ...] = ()
  sets_recipe: bool = False
