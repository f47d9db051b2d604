"""Keras's weight constraints as Optax gradient transformations.

Each factory returns an ``optax.GradientTransformation`` that rewrites the
updates so that ``optax.apply_updates(params, updates)`` satisfies the
constraint. It needs ``params`` in ``update`` and belongs **last** in a chain:
anything after it would move the parameters off the constraint again::

    tx = optax.chain(optax.adam(1e-4), maxnorm_jax.max_norm(3.0))

The state reports, after each update, what share of the constrained neurons
(or weights, for ``non_neg``) the constraint changed, and for norm constraints
the largest neuron norm before projection. Read them anywhere in a nested
state with ``optax.tree_utils.tree_get(opt_state, "fraction_at_bound")``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maxnorm_jax import _hyperparams
from maxnorm_jax._neurons import Axis, check_axis, check_float_leaf, reduction_axes
from maxnorm_jax._projections import (
  Scalar,
  Shell,
  check_min_max,
  nonneg_update_leaf,
  project_update_leaf,
)
from maxnorm_jax._selection import KeyPath, Mask, selected_leaves

PyTree = Any


class NormConstraintState(NamedTuple):
  """Telemetry of a norm constraint, for the latest update.

  Attributes:
    fraction_at_bound: share of the constrained neurons whose norm was outside
      the allowed range (for ``max_norm``: above ``max_value``), and so were
      rescaled. float32 scalar; 0 before the first update.
    largest_norm: the largest neuron norm of ``params + updates`` before the
      projection. float32 scalar; NaN once the updates hold a NaN.
  """
  fraction_at_bound: jax.Array
  largest_norm: jax.Array


class NonNegState(NamedTuple):
  """Telemetry of ``non_neg``, for the latest update.

  Attributes:
    fraction_at_bound: share of the constrained weights that would have been
      negative and were set to zero. float32 scalar.
  """
  fraction_at_bound: jax.Array


def _zero() -> jax.Array:
  return jnp.zeros((), jnp.float32)


def _missing_params(owner: str) -> ValueError:
  return ValueError(
      f"{owner} needs the current parameters: it rewrites the updates so that "
      "params + updates satisfies the constraint, which depends on params. "
      "Call tx.update(updates, state, params).")


def _plan(params: PyTree, mask: Mask, axis: Axis | None, owner: str, *,
          elementwise: bool = False) -> tuple[list[KeyPath], list[Any], list[Any], Any]:
  """Selects and checks the leaves to constrain (static; at ``init`` and trace).

  Returns:
    ``(paths, leaves, axes, treedef)`` where ``axes[i]`` is None for a leaf
    left alone, and otherwise the axes its neurons' norms reduce over (``()``
    for an elementwise constraint).
  """
  paths, leaves, selected, treedef = selected_leaves(params, mask, owner=owner)
  if not any(selected):
    raise ValueError(
        f"{owner} selects no parameter to constrain: "
        + ("with mask=None it takes every leaf of rank >= 2, and there is none."
           if mask is None else "the mask is False everywhere."))
  axes: list[Any] = []
  for path, leaf, chosen in zip(paths, leaves, selected):
    if not chosen:
      axes.append(None)
      continue
    check_float_leaf(leaf, path, owner=owner)
    axes.append(() if elementwise else reduction_axes(np.shape(leaf), axis, path, owner=owner))
  return paths, leaves, axes, treedef


def _flatten_updates(updates: PyTree, treedef: Any, owner: str) -> list[Any]:
  """The leaves of ``updates``, which must have the structure of the params."""
  try:
    return treedef.flatten_up_to(updates)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{owner}: updates and params must have the same structure.\n  updates:"
        f" {jax.tree.structure(updates)}\n  params:  {treedef}") from e


def _norm_constraint(shell: Shell, axis: Axis, mask: Mask, owner: str
                     ) -> optax.GradientTransformation:
  """The transformation behind ``max_norm``, ``min_max_norm`` and ``unit_norm``."""

  def init_fn(params: PyTree) -> NormConstraintState:
    _plan(params, mask, axis, owner)
    return NormConstraintState(_zero(), _zero())

  def update_fn(updates: PyTree, state: NormConstraintState, params: PyTree = None
                ) -> tuple[PyTree, NormConstraintState]:
    del state
    if params is None:
      raise _missing_params(owner)
    _, leaves, leaf_axes, treedef = _plan(params, mask, axis, owner)
    update_leaves = _flatten_updates(updates, treedef, owner)
    new_updates, outside_counts, maxima, total = [], [], [], 0
    for param, update, axes in zip(leaves, update_leaves, leaf_axes):
      if axes is None:
        new_updates.append(update)
        continue
      new_update, norms, outside = project_update_leaf(param, update, axes, shell)
      new_updates.append(new_update)
      outside_counts.append(jnp.sum(outside, dtype=jnp.int32))
      maxima.append(jnp.max(norms).astype(jnp.float32))
      total += outside.size
    fraction = jnp.sum(jnp.stack(outside_counts)).astype(jnp.float32) / total
    largest = jnp.max(jnp.stack(maxima))
    return (jax.tree_util.tree_unflatten(treedef, new_updates),
            NormConstraintState(fraction, largest))

  return optax.GradientTransformation(init_fn, update_fn)


def max_norm(max_value: Scalar = 3.0, *, axis: Axis = None, mask: Mask = None
             ) -> optax.GradientTransformation:
  r"""Keeps every neuron's incoming weight vector within norm ``max_value``.

  After the update, each neuron ``w`` of each selected kernel is projected onto
  the Euclidean ball of radius :math:`c`:

  .. math::
    w \leftarrow w \cdot \min\left(1, \frac{c}{\lVert w \rVert_2}\right)

  This is the exact projection: a neuron inside the ball keeps the update the
  inner optimizer gave it, bit for bit, and a zero neuron gives no NaN. Keras's
  ``MaxNorm`` instead multiplies every neuron by
  :math:`\min(\lVert w\rVert, c) / (\lVert w\rVert + 10^{-7})`, which shrinks
  neurons inside the ball by a relative :math:`10^{-7}/\lVert w\rVert`; the
  two agree to that tolerance. (The *updates* are exact; inside one jitted
  step, XLA may still round ``params + updates`` differently than it would
  without the constraint, e.g. by fusing it into a multiply-add.) The
  constraint was popularised with dropout
  (Srivastava et al., 2014), with :math:`c` of 3 or 4.

  The transformation needs ``params`` and belongs last in a chain.

  Args:
    max_value: the largest allowed neuron norm :math:`c`; finite and > 0.
    axis: ``None`` (default) reduces over every axis but the last, which is a
      neuron of a Flax Dense ``(in, out)`` or Conv ``(..., in, out)`` kernel.
      An int or tuple of ints has Keras's meaning: the axes to reduce over.
      With ``optax.inject_hyperparams``, list ``"axis"`` in ``static_args``.
    mask: which leaves to constrain: ``None`` for every leaf of rank >= 2 (all
      kernels, no biases), a pytree of bools, or a callable such as
      :func:`paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`NormConstraintState`.

  Raises:
    ValueError: for a ``max_value`` that is not finite and positive; at
      ``init`` or first trace, for a mask that does not fit the params or
      selects nothing, an ``axis`` out of range for a selected leaf, or a
      selected leaf that is not floating point; and when ``params`` is None.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[3.0, 0.3], [4.0, 0.4]]), "bias": jnp.zeros(2)}
    >>> tx = optax.chain(optax.sgd(1.0), mnj.max_norm(1.0))
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.zeros_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> optax.apply_updates(params, updates)["kernel"].round(6)
    Array([[0.6, 0.3],
           [0.8, 0.4]], dtype=float32)
    >>> optax.tree_utils.tree_get(state, "fraction_at_bound")
    Array(0.5, dtype=float32)

  References:
    Srivastava et al., `Dropout: A Simple Way to Prevent Neural Networks from
    Overfitting <https://jmlr.org/papers/v15/srivastava14a.html>`_, JMLR 2014.
  """
  owner = "max_norm"
  _hyperparams.check_positive_finite("max_value", max_value, owner=owner)
  check_axis(axis, owner=owner)
  return _norm_constraint(Shell(0.0, max_value, 1.0), axis, mask, owner)


def min_max_norm(min_value: Scalar = 0.0, max_value: Scalar = 1.0, rate: Scalar = 1.0,
                 *, axis: Axis = None, mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every neuron's norm within ``[min_value, max_value]``, at ``rate``.

  A neuron of norm :math:`n` outside the range is rescaled to norm

  .. math::
    r \cdot \operatorname{clip}(n, m_{\min}, m_{\max}) + (1 - r)\, n,

  Keras's ``MinMaxNorm`` formula: ``rate=1`` enforces the range strictly, a
  smaller rate moves the norm part of the way each step. Neurons already in
  range keep their update bit for bit, and a zero neuron stays zero (it has no
  direction to scale), where Keras would return it unchanged as well.

  The transformation needs ``params`` and belongs last in a chain.

  Args:
    min_value: the smallest allowed norm; finite and >= 0.
    max_value: the largest allowed norm; finite, > 0 and >= ``min_value``.
    rate: in [0, 1], how far to move an out-of-range norm towards the range.
    axis: as for :func:`max_norm`.
    mask: as for :func:`max_norm`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`NormConstraintState`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[0.3, 6.0], [0.4, 8.0]])}  # norms 0.5, 10
    >>> tx = mnj.min_max_norm(1.0, 2.0)
    >>> updates, _ = tx.update({"kernel": jnp.zeros((2, 2))}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["kernel"].round(6)
    Array([[0.6, 1.2],
           [0.8, 1.6]], dtype=float32)
  """
  owner = "min_max_norm"
  check_min_max(min_value, max_value, rate, owner=owner)
  check_axis(axis, owner=owner)
  return _norm_constraint(Shell(min_value, max_value, rate), axis, mask, owner)


def unit_norm(*, axis: Axis = None, mask: Mask = None) -> optax.GradientTransformation:
  r"""Rescales every neuron to unit norm, :math:`w \leftarrow w / \lVert w \rVert`.

  Keras's ``UnitNorm``. A zero neuron stays zero instead of dividing by
  ``1e-7``. The transformation needs ``params`` and belongs last in a chain.

  Args:
    axis: as for :func:`max_norm`.
    mask: as for :func:`max_norm`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`NormConstraintState`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[3.0], [4.0]])}
    >>> tx = mnj.unit_norm()
    >>> updates, _ = tx.update({"kernel": jnp.zeros((2, 1))}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["kernel"].round(6)
    Array([[0.6],
           [0.8]], dtype=float32)
  """
  owner = "unit_norm"
  check_axis(axis, owner=owner)
  return _norm_constraint(Shell(1.0, 1.0, 1.0), axis, mask, owner)


def non_neg(*, mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every selected weight non-negative, :math:`w \leftarrow \max(w, 0)`.

  Keras's ``NonNeg``. Weights that stay non-negative keep their update bit for
  bit; the others get the update that lands them exactly on zero. By default
  it constrains every leaf of rank >= 2, like the other constraints here; pass
  ``mask`` to choose others (rank-0 and rank-1 leaves are allowed).

  The transformation needs ``params`` and belongs last in a chain.

  Args:
    mask: as for :func:`max_norm`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a :class:`NonNegState`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[0.5, 1.0]])}
    >>> tx = optax.chain(optax.sgd(1.0), mnj.non_neg())
    >>> updates, _ = tx.update({"kernel": jnp.array([[1.0, 0.5]])}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["kernel"]
    Array([[0. , 0.5]], dtype=float32)
  """
  owner = "non_neg"

  def init_fn(params: PyTree) -> NonNegState:
    _plan(params, mask, None, owner, elementwise=True)
    return NonNegState(_zero())

  def update_fn(updates: PyTree, state: NonNegState, params: PyTree = None
                ) -> tuple[PyTree, NonNegState]:
    del state
    if params is None:
      raise _missing_params(owner)
    _, leaves, leaf_axes, treedef = _plan(params, mask, None, owner, elementwise=True)
    update_leaves = _flatten_updates(updates, treedef, owner)
    new_updates, counts, total = [], [], 0
    for param, update, axes in zip(leaves, update_leaves, leaf_axes):
      if axes is None:
        new_updates.append(update)
        continue
      new_update, negative = nonneg_update_leaf(param, update)
      new_updates.append(new_update)
      counts.append(jnp.sum(negative, dtype=jnp.int32))
      total += negative.size
    fraction = jnp.sum(jnp.stack(counts)).astype(jnp.float32) / total
    return jax.tree_util.tree_unflatten(treedef, new_updates), NonNegState(fraction)

  return optax.GradientTransformation(init_fn, update_fn)
