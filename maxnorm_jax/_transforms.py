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
import optax

from maxnorm_jax import _hyperparams, _layouts
from maxnorm_jax._hyperparams import Bound, Scalar
from maxnorm_jax._leafwise import Site, plan
from maxnorm_jax._projections import (
  LeafResult,
  Shell,
  nonneg_update_leaf,
  plan_shells,
  project_update_leaf,
)
from maxnorm_jax._selection import Mask

PyTree = Any


class NormConstraintState(NamedTuple):
  """Telemetry of a norm constraint, for the latest update.

  Attributes:
    fraction_at_bound: share of the constrained neurons whose norm was outside
      the allowed range (for ``max_norm``: above ``max_value``), and so were
      rescaled. float32 scalar; 0 before the first update. NaN when a
      constrained neuron of ``params + updates`` held a NaN or an inf, or a
      traced bound was invalid (see :func:`max_norm`).
    largest_norm: the largest neuron norm of ``params + updates`` before the
      projection. float32 scalar; NaN or inf when a neuron held one, NaN for an
      invalid traced bound.
  """
  fraction_at_bound: jax.Array
  largest_norm: jax.Array


class NonNegState(NamedTuple):
  """Telemetry of ``non_neg``, for the latest update.

  Attributes:
    fraction_at_bound: share of the constrained weights that would have been
      negative and were set to zero. float32 scalar; NaN when a constrained
      weight of ``params + updates`` was NaN or inf.
  """
  fraction_at_bound: jax.Array


def _zero() -> jax.Array:
  return jnp.zeros((), jnp.float32)


def _missing_params(owner: str) -> ValueError:
  return ValueError(
      f"{owner} needs the current parameters: it rewrites the updates so that "
      "params + updates satisfies the constraint, which depends on params. "
      "Call tx.update(updates, state, params).")


def _fraction(counts: list[jax.Array], total: int, faulty: list[jax.Array]) -> jax.Array:
  """``sum(counts) / total`` as float32 (0 when there is nothing), NaN if any faulty."""
  fraction = jnp.sum(jnp.stack(counts)).astype(jnp.float32) / max(total, 1)
  return jnp.where(jnp.any(jnp.stack(faulty)), jnp.float32(jnp.nan), fraction)


def _norm_constraint(bounds: dict[str, Bound], rate: Scalar, layout: _layouts.Layout,
                     mask: Mask, owner: str) -> optax.GradientTransformation:
  """The transformation behind ``max_norm``, ``min_max_norm`` and ``unit_norm``."""

  def init_fn(params: PyTree) -> NormConstraintState:
    plan_shells(params, bounds, rate, layout=layout, mask=mask, owner=owner,
                require_selection=True)
    return NormConstraintState(_zero(), _zero())

  def update_fn(updates: PyTree, state: NormConstraintState, params: PyTree = None
                ) -> tuple[PyTree, NormConstraintState]:
    del state
    if params is None:
      raise _missing_params(owner)
    leaf_plan = plan_shells(params, bounds, rate, layout=layout, mask=mask, owner=owner,
                            require_selection=True)

    def one(site: Site, param: jax.Array, update: jax.Array
            ) -> tuple[jax.Array, LeafResult]:
      return project_update_leaf(param, update, site.axes, Shell.at(site, rate, owner=owner))

    new_updates, results = leaf_plan.map(one, params, updates, owner=owner)
    largest = jnp.max(jnp.stack([r.largest for r in results]))
    fraction = _fraction([r.outside for r in results], sum(r.neurons for r in results),
                         [r.faulty for r in results])
    return new_updates, NormConstraintState(fraction, largest)

  return optax.GradientTransformation(init_fn, update_fn)


def max_norm(max_value: Bound = 3.0, *, axis: _layouts.Axis = None,
             neuron_axis: int | None = None, mask: Mask = None
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

  What it does at the edges:

  * **Low precision.** For a bf16 or fp16 leaf the updates come back in
    float32: in the leaf's dtype, ``target - params`` would be rounded at the
    scale of ``params`` (a bf16 neuron of norm 300 projected onto norm 1 would
    land near 1.4, or on zero). ``optax.apply_updates`` adds them in float32
    and casts back, so the new params are the projection rounded once to bf16.
    (Under ``jax_numpy_dtype_promotion="strict"``, add them in float32
    yourself.) Other leaves keep their dtype.
  * **Any finite weights** are projected correctly: when squaring overflows
    (weights beyond about 1.8e19 in float32) or underflows, that leaf's norms
    are taken from ``w / max|w|`` instead, on a slow path the common case
    does not pay for.
  * **Non-finite values pass through.** A neuron of ``params + updates`` that
    holds a NaN or an inf keeps its update as it is (as it would without the
    constraint), and both telemetry values of the state become NaN (or
    ``largest_norm`` inf): ``jnp.isnan(state.fraction_at_bound)`` is the
    signal to stop.
  * **A traced bound** (``optax.inject_hyperparams`` under ``jit``, or a
    callable bound computed from the leaf) cannot be checked in Python. If it
    is invalid (not finite, or <= 0), the updates of the leaves it applies to
    are NaN, and so is the telemetry: never a silently flipped sign or a
    disabled constraint.
  * **Empty leaves** (a zero-size axis) are left as they are: they have no
    neuron, or only empty ones of norm 0.

  Args:
    max_value: the largest allowed neuron norm :math:`c`; finite and > 0. A
      number (or scalar array) for every constrained leaf, or per leaf: a
      pytree of numbers with the structure of the params or a prefix of it
      (``None`` where a leaf is not constrained), or a callable
      ``(path, leaf) -> number`` given the leaf's path (``"Dense_0/kernel"``)
      and the leaf. With ``optax.inject_hyperparams``, a number can change at
      run time; list a callable ``max_value`` in ``static_args`` (optax would
      take it for a schedule; a pytree is passed through as it is).
    axis: Keras's meaning: an int or tuple of ints, the axes to reduce over.
    neuron_axis: the axis that indexes the neurons; the norm is taken over all
      the others. By default (neither ``axis`` nor ``neuron_axis``) it is the
      last axis, where Flax, Haiku and Keras keep a kernel's outputs (Dense
      ``(in, out)``, Conv ``(kh, kw, in, out)``); the weights of Equinox's
      Linear, Conv and ConvTranspose (``(out, in, ...)``) are recognised from
      the params tree and get axis 0, and any other array inside an Equinox
      module is refused until you say where its neurons are. With
      ``optax.inject_hyperparams``, list ``"axis"`` or ``"neuron_axis"`` in
      ``static_args``.
    mask: which leaves to constrain: ``None`` for every kernel (every leaf of
      rank >= 2 except an Equinox convolution's ``(out, 1, 1)`` bias), a pytree
      of bools, or a callable such as :func:`paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`NormConstraintState`.

  Raises:
    ValueError: for a ``max_value`` that is not finite and positive; at
      ``init`` or first trace, for a mask that does not fit the params or
      selects nothing, a layout that does not fit a selected leaf, a selected
      leaf that is not floating point, a per-leaf ``max_value`` that is
      missing or invalid for a selected leaf, or updates that do not have the
      structure and shapes of the params; and when ``params`` is None.

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

    A bound per layer, here from the path:

    >>> params = {"Dense_0": {"kernel": jnp.full((4, 2), 2.0)},
    ...           "Dense_1": {"kernel": jnp.full((4, 2), 2.0)}}
    >>> tx = mnj.max_norm(lambda path, w: 1.0 if path.startswith("Dense_0") else 2.0)
    >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> mnj.neuron_norms(optax.apply_updates(params, updates))
    {'Dense_0': {'kernel': Array([1., 1.], dtype=float32)},
     'Dense_1': {'kernel': Array([2., 2.], dtype=float32)}}

  References:
    Srivastava et al., `Dropout: A Simple Way to Prevent Neural Networks from
    Overfitting <https://jmlr.org/papers/v15/srivastava14a.html>`_, JMLR 2014.
  """
  owner = "max_norm"
  _hyperparams.check_bounds(0.0, max_value, 1.0, owner=owner)
  return _norm_constraint({"max_value": max_value}, 1.0,
                          _layouts.layout(axis, neuron_axis, owner=owner), mask, owner)


def min_max_norm(min_value: Bound = 0.0, max_value: Bound = 1.0, rate: Scalar = 1.0, *,
                 axis: _layouts.Axis = None, neuron_axis: int | None = None,
                 mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every neuron's norm within ``[min_value, max_value]``, at ``rate``.

  A neuron of norm :math:`n` outside the range is rescaled to norm

  .. math::
    r \cdot \operatorname{clip}(n, m_{\min}, m_{\max}) + (1 - r)\, n,

  Keras's ``MinMaxNorm`` formula: ``rate=1`` enforces the range strictly, a
  smaller rate moves the norm part of the way each step. Neurons already in
  range keep their update bit for bit, and a zero neuron stays zero (it has no
  direction to scale), where Keras would return it unchanged as well.

  The transformation needs ``params`` and belongs last in a chain. Low
  precision, non-finite values, traced bounds and empty leaves are handled as
  for :func:`max_norm` (a traced bound is invalid unless
  ``0 <= min_value <= max_value``, ``max_value`` is finite and > 0, and
  ``0 <= rate <= 1``).

  Args:
    min_value: the smallest allowed norm; finite and >= 0. Per leaf as
      ``max_value`` is for :func:`max_norm`.
    max_value: the largest allowed norm; finite, > 0 and >= ``min_value``. Per
      leaf as for :func:`max_norm`.
    rate: in [0, 1], how far to move an out-of-range norm towards the range
      (one number for every leaf).
    axis: as for :func:`max_norm`.
    neuron_axis: as for :func:`max_norm`.
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
  _hyperparams.check_bounds(min_value, max_value, rate, owner=owner)
  return _norm_constraint({"min_value": min_value, "max_value": max_value}, rate,
                          _layouts.layout(axis, neuron_axis, owner=owner), mask, owner)


def unit_norm(*, axis: _layouts.Axis = None, neuron_axis: int | None = None,
              mask: Mask = None) -> optax.GradientTransformation:
  r"""Rescales every neuron to unit norm, :math:`w \leftarrow w / \lVert w \rVert`.

  Keras's ``UnitNorm``. A zero neuron stays zero instead of dividing by
  ``1e-7``, and a tiny one (1e-25) is normalised too. The transformation needs
  ``params`` and belongs last in a chain; the edge cases are as for
  :func:`max_norm`.

  Args:
    axis: as for :func:`max_norm`.
    neuron_axis: as for :func:`max_norm`.
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
  return _norm_constraint({"min_value": 1.0, "max_value": 1.0}, 1.0,
                          _layouts.layout(axis, neuron_axis, owner=owner), mask, owner)


def non_neg(*, mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every selected weight non-negative, :math:`w \leftarrow \max(w, 0)`.

  Keras's ``NonNeg``. Weights that stay non-negative keep their update bit for
  bit; the others get the update that lands them exactly on zero. By default
  it constrains every kernel, like the other constraints here; pass ``mask``
  to choose others (rank-0 and rank-1 leaves are allowed). Updates keep their
  dtype. A weight of ``params + updates`` that is NaN or inf keeps its update
  (so ``-inf`` is not hidden as 0), and ``fraction_at_bound`` is then NaN.

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
    plan(params, mask=mask, owner=owner, layout=None, require_selection=True)
    return NonNegState(_zero())

  def update_fn(updates: PyTree, state: NonNegState, params: PyTree = None
                ) -> tuple[PyTree, NonNegState]:
    del state
    if params is None:
      raise _missing_params(owner)

    def one(site: Site, param: jax.Array, update: jax.Array
            ) -> tuple[jax.Array, tuple[jax.Array, int, jax.Array]]:
      del site
      new_update, clipped, nonfinite = nonneg_update_leaf(param, update)
      return new_update, (jnp.sum(clipped, dtype=jnp.int32), clipped.size, jnp.any(nonfinite))

    leaf_plan = plan(params, mask=mask, owner=owner, layout=None, require_selection=True)
    new_updates, results = leaf_plan.map(one, params, updates, owner=owner)
    counts, sizes, faulty = zip(*results)
    return new_updates, NonNegState(_fraction(list(counts), sum(sizes), list(faulty)))

  return optax.GradientTransformation(init_fn, update_fn)
