"""The experiments, one module each: adding one is a module and a line here.

Each module named in :data:`MODULES` defines ``EXPERIMENT`` (an
:class:`~experiments.claims.experiment.Experiment`), and its name is the
experiment's ``slug``: the directory of its results under
``experiments/results/``.
"""

from __future__ import annotations

import importlib

from experiments.claims.experiment import Experiment

__all__ = ["EXPERIMENTS", "MODULES", "get_experiment", "load_experiment"]

MODULES = ("e1_max_norm_vs_none", "e2_c_and_placement", "e3_high_learning_rate",
           "e4_dropout_max_norm")


def load_experiment(module: str) -> Experiment:
  """The ``EXPERIMENT`` of ``experiments.claims.<module>``, checked to carry the module's name."""
  experiment = importlib.import_module(f"experiments.claims.{module}").EXPERIMENT
  if experiment.slug != module:
    raise ValueError(f"experiments.claims.{module}.EXPERIMENT has slug {experiment.slug!r}; "
                     f"it must be the module's name, {module!r}.")
  return experiment


EXPERIMENTS: dict[str, Experiment] = {e.key: e for e in map(load_experiment, MODULES)}


def get_experiment(key: str) -> Experiment:
  """The experiment called ``key``; a ValueError names the choices otherwise."""
  if key not in EXPERIMENTS:
    raise ValueError(f"Unknown experiment {key!r}; choose from {sorted(EXPERIMENTS)}.")
  return EXPERIMENTS[key]
