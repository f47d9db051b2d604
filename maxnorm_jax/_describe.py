"""What the constraints in an Optax transformation will do to a params tree.

:func:`describe` runs ``tx.init(params)`` under ``jax.eval_shape`` (nothing is
allocated or computed) with a recorder on: every maxnorm_jax transformation's
``init`` resolves its leaves and writes them to the recorder. This finds the
constraints inside any wrapper that calls its inner ``init`` (``optax.chain``,
``optax.masked``, ``optax.MultiSteps``, ``optax.inject_hyperparams``...), with
no change to the ``GradientTransformation`` API.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import optax

from maxnorm_jax._tree import PyTree, Resolved

_RECORDER: contextvars.ContextVar[list[tuple[str, Resolved]] | None] = (
    contextvars.ContextVar("maxnorm_jax_describe", default=None))


def record(caller: str, resolved: Resolved) -> None:
  """Called by every transformation's ``init``: notes its plan while :func:`describe` runs."""
  plans = _RECORDER.get()
  if plans is not None:
    plans.append((caller, resolved))


class PlanRow(NamedTuple):
  """One leaf that a constraint selects.

  Attributes:
    transformation: the constraint's name, ``"max_norm"``...
    path: the leaf's path, ``"Dense_0/kernel"``.
    shape: the leaf's shape.
    neuron_axes: the axes that index the neurons (every axis, for
      ``non_neg``, which acts on each weight).
    reduced_axes: the axes a neuron's norm is taken over (``()`` for
      ``non_neg``).
    neurons: the number of neurons (of weights, for ``non_neg``).
    bound: ``max_norm``'s bound as a float; otherwise a string:
      ``"[min, max]"`` (and the rate, if not 1) for ``min_max_norm``,
      ``"= 1"`` for ``unit_norm``, ``">= 0"`` for ``non_neg``. A bound only known at run time
      (``optax.inject_hyperparams``) reads ``"injected"``.
  """
  transformation: str
  path: str
  shape: tuple[int, ...]
  neuron_axes: tuple[int, ...]
  reduced_axes: tuple[int, ...]
  neurons: int
  bound: float | str


def _number(value: Any) -> float | str:
  if isinstance(value, jax.core.Tracer):
    return "injected"
  return float(value)


def _bound(caller: str, bounds: Any) -> float | str:
  if bounds is None:
    return ">= 0"
  lo, hi, rate = (_number(v) for v in bounds)
  if caller == "max_norm" and rate == 1.0 and lo == 0.0:
    return hi
  if "injected" in (lo, hi, rate):
    return "injected"
  text = f"= {hi:g}" if lo == hi else f"[{lo:g}, {hi:g}]"
  return text if rate == 1.0 else f"{text}, rate {rate:g}"


def _show_axes(axes: tuple[int, ...]) -> str:
  return "-" if not axes else ", ".join(str(a) for a in axes)


class Plan:
  """The leaves the constraints of a transformation select: a printable table.

  ``str(plan)`` (and ``repr``) is the table; ``plan.rows`` holds one
  :class:`PlanRow` per leaf, in the order of the transformations in the chain
  and of ``jax.tree.leaves`` within each; a plan iterates over its rows.
  """

  _COLUMNS = ("transformation", "path", "shape", "neuron axes", "reduced axes", "neurons",
              "bound")

  def __init__(self, rows: tuple[PlanRow, ...]):
    self.rows = rows

  def __iter__(self) -> Iterator[PlanRow]:
    return iter(self.rows)

  def __len__(self) -> int:
    return len(self.rows)

  def __str__(self) -> str:
    if not self.rows:
      return "No leaf is selected by a maxnorm_jax constraint."
    cells = [self._COLUMNS] + [
        (r.transformation, r.path, str(r.shape), _show_axes(r.neuron_axes),
         _show_axes(r.reduced_axes), str(r.neurons),
         f"{r.bound:g}" if isinstance(r.bound, float) else r.bound) for r in self.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(self._COLUMNS))]
    right = {2, 5}  # shapes and counts

    def line(row: tuple[str, ...]) -> str:
      return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join(line(row) for row in cells)

  def __repr__(self) -> str:
    return str(self)


def describe(tx: optax.GradientTransformation, params: PyTree) -> Plan:
  """The leaves that the maxnorm_jax constraints in ``tx`` select, and how.

  One row per selected leaf: its path and shape, the axes that index its
  neurons, the axes each neuron's norm is taken over, the number of neurons
  and the bound. ``tx`` may be any transformation whose ``init`` calls the
  constraints' ``init``: an ``optax.chain`` (nested too), ``optax.masked``,
  ``optax.MultiSteps``, ``optax.inject_hyperparams``. ``tx.init`` runs under
  ``jax.eval_shape``: nothing is allocated, so ``params`` may be a tree of
  ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape`` of the model's init).

  Args:
    tx: an Optax transformation.
    params: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    A :class:`Plan`: printed, a table; ``plan.rows``, the rows as
    :class:`PlanRow`.

  Raises:
    ValueError: what ``tx.init(params)`` raises, e.g. a layout that does not
      fit a leaf.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"Dense_0": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)},
    ...           "embed": jnp.ones((100, 8))}
    >>> tx = optax.chain(optax.adam(1e-3),
    ...                  mnj.max_norm(3.0, neuron_axis={"Dense_0": None, "embed": 0}))
    >>> print(mnj.describe(tx, params))
    transformation  path            shape     neuron axes  reduced axes  neurons  bound
    max_norm        Dense_0/kernel  (8, 4)    1            0                   4  3
    max_norm        embed           (100, 8)  0            1                 100  3
    >>> mnj.describe(tx, params).rows[1].neurons
    100
  """
  plans: list[tuple[str, Resolved]] = []
  token = _RECORDER.set(plans)
  try:
    # A new function each time: jax caches traces by function, and a cached
    # trace would not run the constraints' init again.
    jax.eval_shape(lambda p: tx.init(p), params)
  finally:
    _RECORDER.reset(token)
  rows = []
  for caller, resolved in plans:
    for spec in resolved.specs:
      if spec is None:
        continue
      neuron_axes = tuple(a for a in range(len(spec.shape)) if a not in spec.axes)
      rows.append(PlanRow(caller, spec.path, spec.shape, neuron_axes, spec.axes,
                          math.prod(spec.shape[a] for a in neuron_axes),
                          _bound(caller, spec.bounds)))
  return Plan(tuple(rows))
