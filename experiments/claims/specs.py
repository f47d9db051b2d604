"""Which runs each experiment makes: E1, E2 and E3 as lists of :class:`RunSpec`.

Every run starts from the ``article`` preset, takes the budget's overrides
for its schedule, then the experiment's own settings. A run's name encodes
the settings that differ between runs (optimizer, learning rate, constraint,
seed), so two experiments that need the same run (E1's and E2's ``c = 3`` on
Dense(1024), seed 0) share one directory and train it once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

from experiments.cifar10.configs import Config, get_config
from experiments.claims.budgets import Budget

__all__ = ["EXPERIMENTS", "Experiment", "RunSpec", "get_experiment", "run_name"]

Schedule = Literal["regular", "short"]


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
  """``adam-lr0.0001-c3-dense1-seed0``, ``sgd0.9-lr0.1-none-seed0``, ..."""
  optimizer = "adam" if config.optimizer == "adam" else f"sgd{config.momentum:g}"
  constraint = "none" if config.max_norm is None else f"c{config.max_norm:g}-{config.constrain}"
  return f"{optimizer}-lr{config.learning_rate:g}-{constraint}-seed{config.seed}"


def _spec(budget: Budget, schedule: Schedule, labels: dict[str, Any], **settings: Any
          ) -> RunSpec:
  overrides = {**(budget.regular if schedule == "regular" else budget.short), **settings}
  config = get_config("article", **overrides)
  return RunSpec(run_name(config), config, labels)


def _e1_runs(budget: Budget) -> list[RunSpec]:
  runs = []
  for seed in budget.e1_seeds:  # Pairs by seed, so a cut-short sweep leaves pairs.
    runs.append(_spec(budget, "regular", {"variant": "none", "seed": seed},
                      max_norm=None, seed=seed))
    runs.append(_spec(budget, "regular", {"variant": "max_norm(3), Dense(1024)", "seed": seed},
                      max_norm=3.0, constrain="dense1", seed=seed))
  return runs


E2_C = (1.0, 2.0, 3.0, 4.0, math.inf)


def _e2_runs(budget: Budget) -> list[RunSpec]:
  runs = []
  for seed in budget.e2_seeds:
    # The smallest c first: it binds soonest, so a cut-short sweep keeps the
    # runs most likely to differ from no constraint.
    for c in E2_C:
      if math.isinf(c):  # c = inf is no constraint; placement does not matter.
        runs.append(_spec(budget, "regular", {"c": c, "placement": "none", "seed": seed},
                          max_norm=None, seed=seed))
        continue
      for placement in ("dense1", "all"):
        runs.append(_spec(budget, "regular", {"c": c, "placement": placement, "seed": seed},
                          max_norm=c, constrain=placement, seed=seed))
  return runs


# (optimizer, learning rate): Adam at 10x, 30x and 100x the article's 1e-4,
# and SGD with momentum 0.9 at 0.1 (an effective step of lr / (1 - m) = 1).
E3_SETTINGS = (("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("sgd", 0.1))


# Constraint variants of E3: none, the article's (Dense(1024) only), and every
# kernel as the Dropout paper does; the label is what reports show.
E3_CONSTRAINTS = ((None, "dense1", "none"), (3.0, "dense1", "max_norm(3), Dense(1024)"),
                  (3.0, "all", "max_norm(3), every kernel"))


def _e3_runs(budget: Budget) -> list[RunSpec]:
  runs = []
  # Each setting without and with the article's constraint first; every-kernel
  # runs last, so a cut-short sweep still has the article's comparison.
  for variants in (E3_CONSTRAINTS[:2], E3_CONSTRAINTS[2:]):
    for seed in budget.e3_seeds:
      for optimizer, lr in E3_SETTINGS:
        for c, constrain, label in variants:
          labels = {"optimizer": optimizer, "lr": lr, "constraint": label, "seed": seed}
          runs.append(_spec(budget, "short", labels, optimizer=optimizer, learning_rate=lr,
                            momentum=0.9, max_norm=c, constrain=constrain, seed=seed))
  return runs


@dataclasses.dataclass(frozen=True)
class Experiment:
  """An experiment: its runs under a budget, and where its results go.

  Attributes:
    key: the command-line name (``e1``).
    slug: directory name under ``experiments/results/``.
    title: heading of its ``results.md``.
    schedule: which of the budget's schedules its runs use.
    runs: the runs it makes under a budget.
  """
  key: str
  slug: str
  title: str
  schedule: Schedule
  runs: Callable[[Budget], list[RunSpec]]


EXPERIMENTS: dict[str, Experiment] = {
    "e1": Experiment("e1", "e1_max_norm_vs_none",
                     "E1: the article's recipe with and without max_norm(3)", "regular", _e1_runs),
    "e2": Experiment("e2", "e2_c_and_placement",
                     "E2: how the bound c and its placement matter", "regular", _e2_runs),
    "e3": Experiment("e3", "e3_high_learning_rate",
                     "E3: max-norm at high learning rates", "short", _e3_runs),
}


def get_experiment(key: str) -> Experiment:
  """The experiment called ``key``; a ValueError names the choices otherwise."""
  if key not in EXPERIMENTS:
    raise ValueError(f"Unknown experiment {key!r}; choose from {sorted(EXPERIMENTS)}.")
  return EXPERIMENTS[key]
