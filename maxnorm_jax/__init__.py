"""maxnorm_jax: Keras-style weight constraints as Optax gradient transformations.

    import optax, maxnorm_jax as mnj
    tx = optax.chain(optax.adam(1e-4), mnj.max_norm(3.0))

Each constraint rewrites the updates so that ``params + updates`` satisfies it,
so it needs ``params`` in ``tx.update`` and belongs last in a chain.
``mnj.nnx`` (Flax NNX: layouts read from the modules, constraints declared
on parameters), ``mnj.linen`` and ``mnj.haiku`` (layouts read from an
``init``) import Flax or Haiku, on first use only.
"""

import importlib as _importlib
from typing import Any as _Any

from maxnorm_jax._constraints import (
    NonNegState,
    NormConstraintState,
    max_norm,
    min_max_norm,
    neuron_norms,
    non_neg,
    project_max_norm,
    project_min_max_norm,
    project_non_neg,
    project_unit_norm,
    unit_norm,
)
from maxnorm_jax._describe import Plan, PlanRow, describe
from maxnorm_jax._tree import path_to_str, paths_matching

__version__ = "0.1.0"

__all__ = (
    "NonNegState",
    "NormConstraintState",
    "Plan",
    "PlanRow",
    "describe",
    "max_norm",
    "min_max_norm",
    "neuron_norms",
    "non_neg",
    "path_to_str",
    "paths_matching",
    "project_max_norm",
    "project_min_max_norm",
    "project_non_neg",
    "project_unit_norm",
    "unit_norm",
)

_SUBMODULES = ("haiku", "linen", "nnx")  # optional, with dependencies of their own


def __getattr__(name: str) -> _Any:
  if name in _SUBMODULES:
    return _importlib.import_module(f"maxnorm_jax.{name}")
  raise AttributeError(f"module 'maxnorm_jax' has no attribute {name!r}")
