"""Neurons of a weight tensor: which axes a norm reduces over, and the norms.

A *neuron* is one slice of a kernel along its output axis: the incoming
weight vector of one unit. Flax keeps the output on the last axis (Dense
``(in, out)``, Conv ``(kh, kw, in, out)``), so by default (``axis=None``) a
neuron's norm is taken over every axis but the last. An explicit ``axis``
(an int or a tuple of ints) has Keras's meaning: the axes to reduce over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maxnorm_jax._selection import KeyPath, Mask, path_to_str, selected_leaves

PyTree = Any
Axis = int | Sequence[int] | None


def check_axis(axis: Axis, *, owner: str) -> None:
  """Validates the form of ``axis`` when a constraint is built.

  Raises:
    TypeError: if ``axis`` is not None, an int or a sequence of ints (a traced
      array, as ``optax.inject_hyperparams`` makes of an int, included).
    ValueError: if ``axis`` is empty or repeats an axis.
  """
  if axis is None:
    return
  if isinstance(axis, (jax.Array, np.ndarray)):
    raise TypeError(
        f"{owner}: axis must be a static int or tuple of ints, got an array. "
        "With optax.inject_hyperparams, pass static_args=('axis',).")
  if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
    axes: tuple[Any, ...] = (axis,)
  elif isinstance(axis, (tuple, list)):
    axes = tuple(axis)
  else:
    raise TypeError(f"{owner}: axis must be an int or a tuple of ints, got {axis!r}.")
  if not axes:
    raise ValueError(f"{owner}: axis=() reduces over no axis; give at least one.")
  for a in axes:
    if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
      raise TypeError(f"{owner}: axis must be an int or a tuple of ints, got {axis!r}.")
  if len(set(axes)) != len(axes):
    raise ValueError(f"{owner}: axis {axis!r} repeats an axis.")


def reduction_axes(shape: tuple[int, ...], axis: Axis, path: KeyPath, *,
                   owner: str) -> tuple[int, ...]:
  """The axes that a neuron's norm reduces over, for a leaf of this shape.

  Args:
    shape: the leaf's shape.
    axis: ``None`` (every axis but the last) or Keras-style axes.
    path: the leaf's key path, for error messages.
    owner: the calling constraint's name, for error messages.

  Returns:
    Sorted, non-negative axes.

  Raises:
    ValueError: if the leaf's rank does not fit ``axis``.
  """
  ndim = len(shape)
  if axis is None:
    if ndim < 2:
      raise ValueError(
          f"{owner}: leaf '{path_to_str(path)}' has shape {shape}; with "
          "axis=None a constrained leaf needs rank >= 2 (neurons on the last "
          "axis). Leave it out of the mask, or pass axis= to say which axes "
          "hold one neuron.")
    return tuple(range(ndim - 1))
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(
          f"{owner}: axis {axis!r} is out of range for leaf "
          f"'{path_to_str(path)}' of shape {shape} (rank {ndim}).")
  normalized = tuple(sorted(int(a) % ndim for a in axes))
  if len(set(normalized)) != len(normalized):
    raise ValueError(
        f"{owner}: axis {axis!r} names the same axis twice for leaf "
        f"'{path_to_str(path)}' of shape {shape}.")
  return normalized


def accumulation_dtype(*dtypes: Any) -> np.dtype:
  """The widest of ``dtypes`` and float32: norms of bf16/fp16 leaves use fp32.

  Chosen explicitly rather than by type promotion, so it also holds under
  ``jax_numpy_dtype_promotion="strict"`` (where bf16 and fp32 do not promote).
  """
  return max((np.dtype(jnp.float32), *map(np.dtype, dtypes)), key=lambda d: d.itemsize)


def squared_norms(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Sum of squares of ``w`` over ``axes`` (kept as size-1 dims), in >= fp32."""
  w = w.astype(accumulation_dtype(w.dtype))
  return jnp.sum(w * w, axis=axes, keepdims=True)


def check_float_leaf(leaf: Any, path: KeyPath, *, owner: str) -> None:
  """Raises a ValueError naming the leaf if it is not a floating-point array."""
  dtype = jnp.result_type(leaf)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{owner}: leaf '{path_to_str(path)}' has dtype {dtype}; constraints "
        "apply to floating-point weights only. Leave it out of the mask.")


def neuron_norms(params: PyTree, *, axis: Axis = None, mask: Mask = None) -> PyTree:
  """The Euclidean norm of every neuron of every selected leaf.

  Norms are computed in float32 (or the leaf's dtype, if wider) and returned in
  that dtype, with the reduced axes removed: a ``(in, out)`` Dense kernel gives
  ``out`` norms, a ``(kh, kw, in, out)`` Conv kernel gives ``out`` norms.

  Args:
    params: a pytree of arrays.
    axis: ``None`` for every axis but the last, or Keras-style axes to reduce.
    mask: which leaves to measure; by default every leaf of rank >= 2. See
      :func:`paths_matching`.

  Returns:
    A pytree with the structure of ``params``: the norms for each selected leaf
    and ``None`` for the others (so ``jax.tree.leaves`` lists only the norms).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "bias": jnp.zeros(2)}
    >>> mnj.neuron_norms(params)
    {'bias': None, 'kernel': Array([5., 1.], dtype=float32)}
  """
  owner = "neuron_norms"
  check_axis(axis, owner=owner)
  paths, leaves, selected, treedef = selected_leaves(params, mask, owner=owner)
  out: list[jax.Array | None] = []
  for path, leaf, chosen in zip(paths, leaves, selected):
    if not chosen:
      out.append(None)
      continue
    check_float_leaf(leaf, path, owner=owner)
    axes = reduction_axes(np.shape(leaf), axis, path, owner=owner)
    out.append(jnp.sqrt(jnp.squeeze(squared_norms(jnp.asarray(leaf), axes), axis=axes)))
  return jax.tree_util.tree_unflatten(treedef, out)
