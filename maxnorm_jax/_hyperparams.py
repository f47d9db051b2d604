"""Constraint hyperparameters: their checks, and bounds that vary by leaf.

A bound (``max_value``, or ``min_max_norm``'s ``min_value`` and ``max_value``)
is one of:

* a number, or a scalar array: the same bound for every constrained leaf;
* a pytree of numbers with the structure of the params, or a prefix of it
  (``None`` where a leaf is not constrained);
* a callable ``(path, leaf) -> number``, called with each constrained leaf's
  path (``"Dense_0/kernel"``, see :func:`paths_matching`) and the leaf, each
  time the constraint is traced.

Concrete values are checked when the constraint is built (numbers) or when the
leaves are planned (at ``init`` and at trace), and errors name the leaf.
Traced values (``optax.inject_hyperparams`` inside ``jax.jit``) cannot be
checked in Python; :func:`valid` gives a traced flag instead, and the
constraints turn the updates of the leaves with an invalid bound into NaN, so
that a bad bound is loud rather than silently flipping signs or disabling the
constraint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maxnorm_jax._selection import Leaf, broadcast_prefix, is_leaf

PyTree = Any
Scalar = float | jax.Array
Bound = Scalar | PyTree | Callable[[str, jax.Array], Scalar]


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


def check_ordered(min_value: Any, max_value: Any, *, owner: str, where: str = "") -> None:
  """Raises a ValueError if ``min_value > max_value`` (traced: skipped)."""
  lo = concrete_scalar("min_value", min_value, owner=owner)
  hi = concrete_scalar("max_value", max_value, owner=owner)
  if lo is not None and hi is not None and lo > hi:
    raise ValueError(
        f"{owner}: min_value ({lo}) must not exceed max_value ({hi}){where}.")


def check_min_max(min_value: Scalar, max_value: Scalar, rate: Scalar, *, owner: str,
                  where: str = "") -> None:
  """Checks one leaf's (or every leaf's) ``min_value``, ``max_value`` and ``rate``.

  Args:
    where: appended to the names in messages, e.g. ``" for leaf 'Dense_0/kernel'"``.
  """
  check_nonnegative_finite("min_value" + where, min_value, owner=owner)
  check_positive_finite("max_value" + where, max_value, owner=owner)
  check_ordered(min_value, max_value, owner=owner, where=where)
  check_rate(rate, owner=owner)


def is_scalar(value: Any) -> bool:
  """True for a bound that is one value for every leaf (not a tree or callable)."""
  return value is not None and not callable(value) and is_leaf(value)


def check_bound(name: str, value: Bound, *, owner: str, positive: bool) -> None:
  """Checks a bound when the constraint is built: fully if it is a number."""
  if value is None:
    raise TypeError(f"{owner}: {name} must be a real number, got None.")
  if is_scalar(value):
    (check_positive_finite if positive else check_nonnegative_finite)(name, value, owner=owner)


def check_bounds(min_value: Bound, max_value: Bound, rate: Scalar, *, owner: str) -> None:
  """Checks a norm constraint's bounds when it is built (numbers fully)."""
  check_bound("min_value", min_value, owner=owner, positive=False)
  check_bound("max_value", max_value, owner=owner, positive=True)
  if is_scalar(min_value) and is_scalar(max_value):
    check_ordered(min_value, max_value, owner=owner)
  check_rate(rate, owner=owner)


def per_leaf(name: str, spec: Bound, params: PyTree, leaves: list[Leaf],
             selected: list[bool], *, owner: str) -> list[Any]:
  """The value of the bound ``spec`` at every leaf (None where not selected).

  Raises:
    ValueError: if a tree bound does not fit the params, or gives no value for a
      selected leaf.
  """
  if is_scalar(spec):
    return [spec if chosen else None for chosen in selected]
  if callable(spec) and is_leaf(spec):
    return [spec(leaf.name, leaf.value) if chosen else None
            for leaf, chosen in zip(leaves, selected)]
  values = broadcast_prefix(spec, params, what=name, owner=owner)
  for leaf, chosen, value in zip(leaves, selected, values):
    if chosen and value is None:
      raise ValueError(
          f"{owner}: {name} has no value for the constrained leaf '{leaf.name}'. Give "
          "it one, or leave the leaf out with mask=.")
  return [value if chosen else None for value, chosen in zip(values, selected)]


def valid(min_value: Scalar, max_value: Scalar, rate: Scalar) -> jax.Array | None:
  """A traced bool: whether traced bounds are valid; None if all are concrete.

  Concrete values were checked in Python already, so only a bound that comes
  in traced (``inject_hyperparams`` under ``jit``, a callable bound that
  computes it from the leaf) needs this.
  """
  values = (min_value, max_value, rate)
  if not any(isinstance(v, jax.core.Tracer) for v in values):
    return None
  lo, hi, r = (jnp.asarray(v, jnp.float32) for v in values)
  return ((lo >= 0) & (hi > 0) & (lo <= hi) & jnp.isfinite(hi) & (r >= 0) & (r <= 1))
