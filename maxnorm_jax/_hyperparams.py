"""Validation of constraint hyperparameters, with errors that name the problem.

Values may be Python numbers or concrete scalar arrays, which are checked when
the constraint is built, or traced arrays (``optax.inject_hyperparams`` inside
``jax.jit``), which cannot be inspected and are passed through.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def concrete_scalar(name: str, value: Any, *, owner: str) -> float | None:
  """Returns ``value`` as a float, or None when it is traced.

  Raises:
    TypeError: if ``value`` is not a real scalar.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, bool) or not isinstance(
      value, (int, float, np.integer, np.floating, np.ndarray, jax.Array)):
    raise TypeError(f"{owner}: {name} must be a real number, got {value!r}.")
  if np.ndim(value) != 0:
    raise TypeError(f"{owner}: {name} must be a scalar, got shape {np.shape(value)}.")
  if not np.issubdtype(np.asarray(value).dtype, np.number) or np.iscomplexobj(value):
    raise TypeError(f"{owner}: {name} must be a real number, got {value!r}.")
  return float(value)


def check_positive_finite(name: str, value: Any, *, owner: str) -> None:
  """Raises a ValueError unless ``value`` is finite and > 0 (traced: skipped)."""
  v = concrete_scalar(name, value, owner=owner)
  if v is not None and not (v > 0 and math.isfinite(v)):
    raise ValueError(f"{owner}: {name} must be finite and > 0, got {v}.")


def check_nonnegative_finite(name: str, value: Any, *, owner: str) -> None:
  """Raises a ValueError unless ``value`` is finite and >= 0 (traced: skipped)."""
  v = concrete_scalar(name, value, owner=owner)
  if v is not None and not (v >= 0 and math.isfinite(v)):
    raise ValueError(f"{owner}: {name} must be finite and >= 0, got {v}.")


def check_rate(value: Any, *, owner: str) -> None:
  """Raises a ValueError unless ``rate`` lies in [0, 1] (traced: skipped)."""
  v = concrete_scalar("rate", value, owner=owner)
  if v is not None and not 0.0 <= v <= 1.0:
    raise ValueError(f"{owner}: rate must lie in [0, 1], got {v}.")


def check_ordered(min_value: Any, max_value: Any, *, owner: str) -> None:
  """Raises a ValueError if ``min_value > max_value`` (traced: skipped)."""
  lo = concrete_scalar("min_value", min_value, owner=owner)
  hi = concrete_scalar("max_value", max_value, owner=owner)
  if lo is not None and hi is not None and lo > hi:
    raise ValueError(
        f"{owner}: min_value ({lo}) must not exceed max_value ({hi}).")
