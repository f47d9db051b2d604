"""One training run of an experiment: its name, config and report labels.

Every run starts from the ``article`` preset, takes the budget's overrides for
its schedule, then the experiment's own settings. A run's name encodes the
settings that differ between runs (optimizer, learning rate, constraint,
seed), so two experiments that need the same run (E1's and E2's ``c = 3`` on
the dense layer) share one directory and train it once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments.cifar10.configs import Config
from experiments.claims.budgets import Budget, Schedule

__all__ = ["RunSpec", "make_run", "run_name"]


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of an experiment.

  Attributes:
    name: directory name of the run (unique within a budget and schedule).
    config: the full training config.
    labels: what the reports group and plot by (e.g. ``{"c": 3.0, "placement": "dense1"}``).
  """
  name: str
  config: Config
  labels: dict[str, Any]


def run_name(config: Config) -> str:
  """``adam-lr0.0001-c3-dense1-seed0``, ``sgd0.9-lr0.1-none-seed0``,
  ``sgd0.95-lr0.01-drop0.5-c3-all-seed2`` (dropout named only where it is on), ..."""
  optimizer = "adam" if config.optimizer == "adam" else f"sgd{config.momentum:g}"
  constraint = "none" if config.max_norm is None else f"c{config.max_norm:g}-{config.constrain}"
  dropout = "".join(f"-{name}{rate:g}" for name, rate in
                    (("convdrop", config.conv_dropout), ("drop", config.dropout)) if rate)
  return f"{optimizer}-lr{config.learning_rate:g}{dropout}-{constraint}-seed{config.seed}"


def make_run(budget: Budget, schedule: Schedule, labels: dict[str, Any], **settings: Any
             ) -> RunSpec:
  """The run of ``budget``'s ``schedule`` with ``settings`` on top, named by :func:`run_name`."""
  config = budget.config(schedule, **settings)
  return RunSpec(run_name(config), config, labels)
