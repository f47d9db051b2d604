"""The constraints' mathematics, leaf by leaf, and as pure pytree functions.

Every norm constraint here maps a neuron ``w`` with norm ``n`` to
``w * desired(n) / n``, where (Keras's formula)::

    desired(n) = rate * clip(n, min_value, max_value) + (1 - rate) * n

``max_norm`` is ``min_value=0, rate=1`` and ``unit_norm`` is
``min_value=max_value=1, rate=1``. Unlike Keras, which multiplies *every*
neuron by ``desired / (n + 1e-7)``, a neuron whose norm already lies in
``[min_value, max_value]`` is returned bit for bit, so ``max_norm`` is the
exact Euclidean projection onto the ball, and a zero neuron stays zero without
an epsilon.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maxnorm_jax import _hyperparams
from maxnorm_jax._neurons import (
  Axis,
  accumulation_dtype,
  check_axis,
  check_float_leaf,
  reduction_axes,
  squared_norms,
)
from maxnorm_jax._selection import Mask, selected_leaves

PyTree = Any
Scalar = float | jax.Array


class Shell(NamedTuple):
  """The allowed range of neuron norms, and how far to move towards it."""
  min_value: Scalar
  max_value: Scalar
  rate: Scalar

  def scale(self, norms: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-neuron ``(scale, outside)``: the factor to apply, and whether to.

    ``outside`` is False for a neuron already in range (and for a NaN norm, so
    a diverged update passes through untouched, as it would without the
    constraint). A zero norm gets scale 1 instead of a division by zero.
    """
    lo, hi, rate = self.min_value, self.max_value, self.rate
    outside = (norms > hi) | (norms < lo)
    clipped = jnp.clip(norms, lo, hi)
    if isinstance(rate, (int, float)) and rate == 1:
      desired = clipped  # Skip 0 * norm, which is NaN for an infinite norm.
    else:
      desired = rate * clipped + (1 - rate) * norms
    safe = jnp.where(norms > 0, norms, jnp.ones_like(norms))
    return (desired / safe).astype(norms.dtype), outside


def project_update_leaf(param: jax.Array, update: jax.Array, axes: tuple[int, ...],
                        shell: Shell) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Rewrites ``update`` so that ``param + update`` lies in the shell.

  Returns:
    ``(new_update, norms, outside)``; ``norms`` (pre-projection, of
    ``param + update``) and ``outside`` keep the reduced axes as size 1.
  """
  acc = accumulation_dtype(param.dtype, update.dtype)
  p, u = param.astype(acc), update.astype(acc)
  norms = jnp.sqrt(squared_norms(p + u, axes))
  scale, outside = shell.scale(norms)
  # (p + u) * scale - p, written so that p + u feeds the reduction alone: XLA
  # then fuses it there instead of writing it out, one pass fewer over the
  # kernel (see benchmarks/README.md).
  projected = (u * scale + p * (scale - 1)).astype(update.dtype)
  return jnp.where(outside, projected, update), norms, outside


def project_leaf(w: jax.Array, axes: tuple[int, ...], shell: Shell) -> jax.Array:
  """``w`` with every neuron outside the shell moved onto it."""
  acc = accumulation_dtype(w.dtype)
  norms = jnp.sqrt(squared_norms(w, axes))
  scale, outside = shell.scale(norms)
  return jnp.where(outside, (w.astype(acc) * scale).astype(w.dtype), w)


def nonneg_update_leaf(param: jax.Array, update: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
  """Rewrites ``update`` so that ``param + update >= 0``; returns the clip mask."""
  acc = accumulation_dtype(param.dtype, update.dtype)
  negative = param.astype(acc) + update.astype(acc) < 0
  return jnp.where(negative, (-param).astype(update.dtype), update), negative


def map_shell(params: PyTree, shell: Shell, *, axis: Axis, mask: Mask, owner: str
              ) -> PyTree:
  """Applies :func:`project_leaf` to every selected leaf of ``params``."""
  check_axis(axis, owner=owner)
  paths, leaves, selected, treedef = selected_leaves(params, mask, owner=owner)
  out = []
  for path, leaf, chosen in zip(paths, leaves, selected):
    if chosen:
      check_float_leaf(leaf, path, owner=owner)
      leaf = project_leaf(jnp.asarray(leaf), reduction_axes(np.shape(leaf), axis, path,
                                                            owner=owner), shell)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def project_max_norm(params: PyTree, max_value: Scalar = 3.0, *, axis: Axis = None,
                     mask: Mask = None) -> PyTree:
  """Projects every selected neuron onto the ball of radius ``max_value``.

  ``w -> w * min(1, max_value / ||w||)``, neuron by neuron. Neurons inside the
  ball are returned unchanged, bit for bit. Use it outside optax, for example
  to make freshly initialised weights feasible, or in a hand-written loop.

  Args:
    params: a pytree of arrays.
    max_value: the largest allowed neuron norm ``c`` (finite, > 0).
    axis: ``None`` for every axis but the last (Flax layouts), or Keras-style
      axes to reduce over.
    mask: which leaves to constrain; by default every leaf of rank >= 2.

  Returns:
    ``params`` with the selected leaves projected; other leaves are untouched.

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> w = jnp.array([[3.0, 0.3], [4.0, 0.4]])   # neuron norms 5 and 0.5
    >>> mnj.project_max_norm({"kernel": w}, 1.0)["kernel"]
    Array([[0.6, 0.3],
           [0.8, 0.4]], dtype=float32)
  """
  owner = "project_max_norm"
  _hyperparams.check_positive_finite("max_value", max_value, owner=owner)
  return map_shell(params, Shell(0.0, max_value, 1.0), axis=axis, mask=mask, owner=owner)


def project_min_max_norm(params: PyTree, min_value: Scalar = 0.0,
                         max_value: Scalar = 1.0, rate: Scalar = 1.0, *,
                         axis: Axis = None, mask: Mask = None) -> PyTree:
  """Moves every selected neuron's norm towards ``[min_value, max_value]``.

  A neuron of norm ``n`` outside the range is rescaled to norm
  ``rate * clip(n, min_value, max_value) + (1 - rate) * n`` (Keras's
  ``MinMaxNorm``); neurons in range, and zero neurons, are unchanged.

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> w = jnp.array([[0.3, 6.0], [0.4, 8.0]])   # neuron norms 0.5 and 10
    >>> mnj.project_min_max_norm({"k": w}, 1.0, 2.0)["k"]
    Array([[0.6, 1.2],
           [0.8, 1.6]], dtype=float32)
  """
  owner = "project_min_max_norm"
  check_min_max(min_value, max_value, rate, owner=owner)
  return map_shell(params, Shell(min_value, max_value, rate), axis=axis, mask=mask,
                   owner=owner)


def project_unit_norm(params: PyTree, *, axis: Axis = None, mask: Mask = None) -> PyTree:
  """Rescales every selected non-zero neuron to unit norm (Keras's ``UnitNorm``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_unit_norm({"k": jnp.array([[3.0, 0.0], [4.0, 0.0]])})["k"]
    Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32)
  """
  return map_shell(params, Shell(1.0, 1.0, 1.0), axis=axis, mask=mask,
                   owner="project_unit_norm")


def project_non_neg(params: PyTree, *, mask: Mask = None) -> PyTree:
  """Sets the negative entries of every selected leaf to zero (Keras's ``NonNeg``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_non_neg({"k": jnp.array([[-1.0, 2.0]])})["k"]
    Array([[0., 2.]], dtype=float32)
  """
  owner = "project_non_neg"
  paths, leaves, selected, treedef = selected_leaves(params, mask, owner=owner)
  out = []
  for path, leaf, chosen in zip(paths, leaves, selected):
    if chosen:
      check_float_leaf(leaf, path, owner=owner)
      leaf = jnp.maximum(jnp.asarray(leaf), 0)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def check_min_max(min_value: Scalar, max_value: Scalar, rate: Scalar, *, owner: str
                   ) -> None:
  _hyperparams.check_nonnegative_finite("min_value", min_value, owner=owner)
  _hyperparams.check_positive_finite("max_value", max_value, owner=owner)
  _hyperparams.check_ordered(min_value, max_value, owner=owner)
  _hyperparams.check_rate(rate, owner=owner)

