"""Keras's weight constraints as Optax gradient transformations, and as pure functions.

Each transformation rewrites the updates so that ``optax.apply_updates(params,
updates)`` satisfies the constraint; it needs ``params`` and belongs last in a
chain. All norm constraints share one leaf projection, :func:`_project_leaf`:
a neuron ``w`` of norm ``n`` outside ``[min_value, max_value]`` becomes

    w * (rate * clip(n, min_value, max_value) + (1 - rate) * n) / n

(Keras's ``MinMaxNorm``; ``max_norm`` is ``min_value=0, rate=1``), and a neuron
inside keeps its update bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from maxnorm_jax import _describe, _numerics, _tree
from maxnorm_jax._tree import Bound, Bounds, LeafAxis, LeafSpec, Mask, PyTree, Scalar


class NormConstraintState(NamedTuple):
  """Telemetry of a norm constraint, for the latest update.

  Attributes:
    fraction_at_bound: float32 share of the constrained neurons that were
      outside the allowed range, and so rescaled (0 before the first update).
      NaN when a neuron of ``params + updates`` held a NaN or an inf, or a
      traced bound was invalid.
    largest_norm: float32, the largest neuron norm of ``params + updates``
      before the projection; NaN or inf as above.
  """
  fraction_at_bound: jax.Array
  largest_norm: jax.Array


class NonNegState(NamedTuple):
  """Telemetry of ``non_neg``, for the latest update.

  Attributes:
    fraction_at_bound: float32 share of the constrained weights that would
      have been negative and were set to zero; NaN when one of
      ``params + updates`` was NaN or inf.
  """
  fraction_at_bound: jax.Array


class _LeafStats(NamedTuple):
  """What a norm constraint reports about one leaf."""
  outside: jax.Array   # int32: how many neurons were rescaled
  neurons: int
  largest: jax.Array   # float32 largest norm before projection (0 if no neuron)
  faulty: jax.Array    # bool: a non-finite neuron, or an invalid traced bound


def _in_dtype(value: Any, dtype: Any) -> Any:
  """An array bound in ``dtype`` (it may be bf16 from inject_hyperparams); numbers as they are."""
  return value.astype(dtype) if isinstance(value, jax.Array) else value


def _project_leaf(param: jax.Array | None, update: jax.Array, spec: LeafSpec
                  ) -> tuple[jax.Array, _LeafStats]:
  """The update that moves every neuron of ``param + update`` into the spec's bounds.

  With ``param=None`` it projects ``update`` itself (the pure functions). The
  result is in the accumulation dtype (float32 for bf16/fp16 leaves), so that
  ``target - param`` is not rounded at the scale of ``param``. One pass over
  the leaf computes the norms, a second the new update: the per-neuron factors
  are the only intermediates. Neurons inside the bounds, and neurons holding a
  NaN or an inf, keep ``update``; an invalid traced bound makes it NaN.
  """
  assert spec.bounds is not None
  acc = _numerics.accumulation_dtype(update.dtype, *([] if param is None else [param.dtype]))
  u = update.astype(acc)
  p = None if param is None else param.astype(acc)
  lo, hi, rate = (_in_dtype(v, acc) for v in spec.bounds)
  rate_is_one = _known(rate) == 1
  grows = _known(lo) != 0  # may scale a neuron up
  known_hi = _known(hi)
  small_norms_matter = grows or known_hi is None or known_hi ** 2 < 4 * (
      _numerics.underflow_limit(acc, math.prod(u.shape[a] for a in spec.axes)))
  norms = _numerics.neuron_norms((u,) if p is None else (p, u), spec.axes,
                                 small_norms_matter=small_norms_matter)
  n = norms.value
  outside = norms.finite & ((n > hi) | (n < lo))
  clipped = jnp.clip(n, lo, hi)
  factor = (clipped if rate_is_one else rate * clipped) / jnp.where(
      norms.scaled > 0, norms.scaled, jnp.ones_like(norms.scaled))
  unit = norms.unit  # 1 for an ordinary neuron
  p_factor = unit * factor - rate  # p's share: target(p) - p = p * p_factor, to rounding

  def target(w: jax.Array) -> jax.Array:  # w * desired / n, without overflow
    t = (w * unit) * factor
    return t if rate_is_one else t + (1 - rate) * w

  if p is None:
    new = target(u)
  else:
    def from_sum() -> jax.Array:
      return target(p + u) - p

    def split() -> jax.Array:
      # target(u) + target(p) - p: XLA:CPU then reads p + u in the norms' pass
      # only, instead of writing it out. p * p_factor is exact to rounding when
      # the scale is near 1; when the scale is too small for a float, p's share
      # is far below the rounding of p + update at p's scale. XLA:TPU, on the
      # other hand, keeps u between the passes when the params are donated.
      return target(u) + p * p_factor

    if grows:  # scaling up would magnify the rounding of u and p separately
      new = from_sum()
    elif isinstance(u, jax.core.Tracer):
      new = jax.lax.platform_dependent(cpu=split, default=from_sum)
    else:
      new = split()
  new = jnp.where(outside, new, u)
  largest = jnp.max(n, initial=0.0).astype(jnp.float32)
  faulty = jnp.any(~norms.finite)
  valid = _tree.traced_bounds_valid(spec.bounds)
  if valid is not None:
    new = jnp.where(valid, new, jnp.nan)
    largest = jnp.where(valid, largest, jnp.float32(jnp.nan))
    faulty = faulty | ~valid
  return new, _LeafStats(jnp.sum(outside, dtype=jnp.int32), outside.size, largest, faulty)


def _known(value: Any) -> float | None:
  """A bound's value, or None if it is traced."""
  return None if isinstance(value, jax.core.Tracer) else float(value)


def _missing_params(caller: str) -> ValueError:
  return ValueError(
      f"{caller} needs the current parameters: it rewrites the updates so that "
      "params + updates satisfies the constraint, which depends on params. "
      "Call tx.update(updates, state, params).")


def _fraction(counts: list[jax.Array], total: int, faulty: list[jax.Array]) -> jax.Array:
  """``sum(counts) / total`` as float32 (0 when there is nothing), NaN if any faulty."""
  fraction = jnp.sum(jnp.stack(counts)).astype(jnp.float32) / max(total, 1)
  return jnp.where(jnp.any(jnp.stack(faulty)), jnp.float32(jnp.nan), fraction)


def _norm_constraint(bounds: Bounds, axis: LeafAxis, neuron_axis: LeafAxis, mask: Mask,
                     caller: str) -> optax.GradientTransformation:
  """The transformation behind ``max_norm``, ``min_max_norm`` and ``unit_norm``."""
  _tree.check_bounds(bounds, caller=caller)
  layout = _tree.layout(axis, neuron_axis, caller=caller)

  def resolve(params: PyTree) -> _tree.Resolved:
    return _tree.resolve(params, mask=mask, caller=caller, layout=layout, bounds=bounds,
                         require_selection=True)

  def init_fn(params: PyTree) -> NormConstraintState:
    _describe.record(caller, resolve(params))
    zero = jnp.zeros((), jnp.float32)
    return NormConstraintState(zero, zero)

  def update_fn(updates: PyTree, state: NormConstraintState, params: PyTree = None
                ) -> tuple[PyTree, NormConstraintState]:
    del state
    if params is None:
      raise _missing_params(caller)
    new_updates, stats = _tree.map_selected(
        resolve(params), lambda spec, p, u: _project_leaf(p, u, spec), params, updates,
        caller=caller)
    largest = jnp.max(jnp.stack([s.largest for s in stats]))
    fraction = _fraction([s.outside for s in stats], sum(s.neurons for s in stats),
                         [s.faulty for s in stats])
    return new_updates, NormConstraintState(fraction, largest)

  return optax.GradientTransformation(init_fn, update_fn)


def max_norm(max_value: Bound = 3.0, *, axis: LeafAxis = None, neuron_axis: LeafAxis = None,
             mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every neuron's incoming weight vector within norm ``max_value``.

  After the update, each neuron ``w`` of each selected kernel is projected onto
  the Euclidean ball of radius :math:`c`:

  .. math::
    w \leftarrow w \cdot \min\left(1, \frac{c}{\lVert w \rVert_2}\right)

  This is the exact projection: a neuron inside the ball keeps its update bit
  for bit (Keras's ``MaxNorm`` shrinks it by :math:`10^{-7}/\lVert w\rVert`).
  Norms are right for any finite weights; for bf16/fp16 leaves the updates
  come back in float32; a neuron holding a NaN or an inf keeps its update and
  makes the telemetry NaN; an invalid traced bound makes the leaf's updates
  NaN. It needs ``params`` and belongs last in a chain.

  Args:
    max_value: the largest allowed neuron norm :math:`c`, finite and > 0: a
      number, a pytree of numbers with the structure of the params or a prefix
      of it (``None`` where a leaf is not constrained), or a callable
      ``(path, leaf) -> number`` (path like ``"Dense_0/kernel"``). With
      ``optax.inject_hyperparams``, list a callable in ``static_args``.
    axis: Keras's meaning: an int or tuple of ints, the axes to reduce over.
      Per leaf, as ``max_value``: a pytree prefix of the params or a callable
      ``(path, leaf) -> axes``, where ``None`` means the leaf's default layout;
      a per-leaf ``axis`` must leave an axis to index the neurons.
    neuron_axis: the axis, or tuple of axes, that index the neurons; the norm
      is taken over all the others (``(0, -1)`` for a stacked ``(layers, in,
      out)`` kernel: one neuron per layer and output). By default the last axis
      (Flax, Haiku, Keras), and axis 0 for the weights of Equinox's Linear,
      Conv, ConvTranspose and Embedding (rows). Per leaf as ``axis``. With
      ``optax.inject_hyperparams``, list ``axis``/``neuron_axis`` in ``static_args``.
    mask: which leaves to constrain: ``None`` for every kernel (every leaf of
      rank >= 2 except an Equinox convolution's bias and an Equinox
      Embedding's table, which is opt-in), a pytree of bools, or a callable
      such as :func:`paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`NormConstraintState`.

  Raises:
    ValueError: for a ``max_value`` that is not finite and positive; at
      ``init`` or first trace, for a mask that does not fit the params or
      selects nothing, a layout that does not fit a selected leaf, a selected
      leaf that is not floating point, a per-leaf ``max_value`` that is
      missing or invalid, updates that do not have the structure and shapes
      of the params; and when ``params`` is None.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
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

    Where the neurons lie, per leaf: an embedding table by rows, and a stacked
    ``(layers, in, out)`` kernel with one neuron per layer and output:

    >>> params = {"embed": jnp.full((5, 4), 1.0), "stack": jnp.full((2, 9, 4), 1.0)}
    >>> layout = {"embed": 0, "stack": (0, -1)}
    >>> tx = mnj.max_norm(1.0, neuron_axis=layout)
    >>> updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    >>> norms = mnj.neuron_norms(optax.apply_updates(params, updates), neuron_axis=layout)
    >>> jax.tree.map(lambda n: (n.shape, round(float(n.max()), 4)), norms)
    {'embed': ((5,), 1.0), 'stack': ((2, 4), 1.0)}

  References:
    Srivastava et al., `Dropout: A Simple Way to Prevent Neural Networks from
    Overfitting <https://jmlr.org/papers/v15/srivastava14a.html>`_, JMLR 2014.
  """
  return _norm_constraint(Bounds(0.0, max_value, 1.0), axis, neuron_axis, mask, "max_norm")


def min_max_norm(min_value: Bound = 0.0, max_value: Bound = 1.0, rate: Scalar = 1.0, *,
                 axis: LeafAxis = None, neuron_axis: LeafAxis = None,
                 mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every neuron's norm within ``[min_value, max_value]``, at ``rate``.

  A neuron of norm :math:`n` outside the range is rescaled to norm

  .. math::
    r \cdot \operatorname{clip}(n, m_{\min}, m_{\max}) + (1 - r)\, n,

  Keras's ``MinMaxNorm``. Neurons in range keep their update bit for bit, and
  a zero neuron stays zero. Edge cases as for :func:`max_norm` (a traced bound
  is invalid unless ``0 <= min_value <= max_value``, ``max_value`` is finite
  and > 0, and ``0 <= rate <= 1``). It needs ``params`` and belongs last in a
  chain.

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
  return _norm_constraint(Bounds(min_value, max_value, rate), axis, neuron_axis, mask,
                          "min_max_norm")


def unit_norm(*, axis: LeafAxis = None, neuron_axis: LeafAxis = None,
              mask: Mask = None) -> optax.GradientTransformation:
  r"""Rescales every neuron to unit norm, :math:`w \leftarrow w / \lVert w \rVert`.

  Keras's ``UnitNorm``, without its epsilon: a zero neuron stays zero, and a
  tiny one (1e-25) is normalised too. Edge cases as for :func:`max_norm`. It
  needs ``params`` and belongs last in a chain.

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
  return _norm_constraint(Bounds(1.0, 1.0, 1.0), axis, neuron_axis, mask, "unit_norm")


def _project_tree(params: PyTree, bounds: Bounds, axis: LeafAxis, neuron_axis: LeafAxis,
                  mask: Mask, caller: str) -> PyTree:
  """Applies :func:`_project_leaf` to every selected leaf of ``params``, in its dtype."""
  _tree.check_bounds(bounds, caller=caller)
  resolved = _tree.resolve(params, mask=mask, caller=caller, bounds=bounds,
                           layout=_tree.layout(axis, neuron_axis, caller=caller))
  out, _ = _tree.map_selected(
      resolved, lambda spec, w: (_project_leaf(None, w, spec)[0].astype(w.dtype), None),
      params, caller=caller)
  return out


def project_max_norm(params: PyTree, max_value: Bound = 3.0, *, axis: LeafAxis = None,
                     neuron_axis: LeafAxis = None, mask: Mask = None) -> PyTree:
  """Projects every selected neuron onto the ball of radius ``max_value``.

  ``w -> w * min(1, max_value / ||w||)``, neuron by neuron; neurons inside the
  ball are returned bit for bit. For use outside optax, e.g. on freshly
  initialised weights or after ``optax.apply_updates``.

  Args:
    params: a pytree of arrays.
    max_value: the largest allowed neuron norm (finite, > 0); per leaf as for
      :func:`max_norm`.
    axis: as for :func:`max_norm`.
    neuron_axis: as for :func:`max_norm`.
    mask: as for :func:`max_norm`.

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
  return _project_tree(params, Bounds(0.0, max_value, 1.0), axis, neuron_axis, mask,
                       "project_max_norm")


def project_min_max_norm(params: PyTree, min_value: Bound = 0.0, max_value: Bound = 1.0,
                         rate: Scalar = 1.0, *, axis: LeafAxis = None,
                         neuron_axis: LeafAxis = None, mask: Mask = None) -> PyTree:
  """Moves every selected neuron's norm towards ``[min_value, max_value]``.

  A neuron of norm ``n`` outside the range is rescaled to norm
  ``rate * clip(n, min_value, max_value) + (1 - rate) * n`` (Keras's
  ``MinMaxNorm``); neurons in range, and zero neurons, are unchanged. Arguments
  as for :func:`min_max_norm`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> w = jnp.array([[0.3, 6.0], [0.4, 8.0]])   # neuron norms 0.5 and 10
    >>> mnj.project_min_max_norm({"k": w}, 1.0, 2.0)["k"]
    Array([[0.6, 1.2],
           [0.8, 1.6]], dtype=float32)
  """
  return _project_tree(params, Bounds(min_value, max_value, rate), axis, neuron_axis, mask,
                       "project_min_max_norm")


def project_unit_norm(params: PyTree, *, axis: LeafAxis = None, neuron_axis: LeafAxis = None,
                      mask: Mask = None) -> PyTree:
  """Rescales every selected non-zero neuron to unit norm (Keras's ``UnitNorm``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_unit_norm({"k": jnp.array([[3.0, 0.0], [4.0, 0.0]])})["k"]
    Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32)
  """
  return _project_tree(params, Bounds(1.0, 1.0, 1.0), axis, neuron_axis, mask,
                       "project_unit_norm")


# ---------------------------------------------------------------- non_neg


def _non_neg_leaf(param: jax.Array, update: jax.Array
                  ) -> tuple[jax.Array, tuple[jax.Array, int, jax.Array]]:
  """The update that makes ``param + update >= 0``, and ``(clipped, size, faulty)``."""
  acc = _numerics.accumulation_dtype(param.dtype, update.dtype)
  candidate = param.astype(acc) + update.astype(acc)
  finite = jnp.isfinite(candidate)
  negative = finite & (candidate < 0)
  new = jnp.where(negative, (-param).astype(update.dtype), update)
  return new, (jnp.sum(negative, dtype=jnp.int32), negative.size, jnp.any(~finite))


def non_neg(*, mask: Mask = None) -> optax.GradientTransformation:
  r"""Keeps every selected weight non-negative, :math:`w \leftarrow \max(w, 0)`.

  Keras's ``NonNeg``. Weights that stay non-negative keep their update bit for
  bit; the others get the update that lands them exactly on zero. By default it
  constrains every kernel; ``mask`` may also select rank-0 and rank-1 leaves.
  Updates keep their dtype. A weight of ``params + updates`` that is NaN or inf
  keeps its update, and ``fraction_at_bound`` is then NaN. It needs ``params``
  and belongs last in a chain.

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
  caller = "non_neg"

  def init_fn(params: PyTree) -> NonNegState:
    _describe.record(caller, _tree.resolve(params, mask=mask, caller=caller,
                                           require_selection=True))
    return NonNegState(jnp.zeros((), jnp.float32))

  def update_fn(updates: PyTree, state: NonNegState, params: PyTree = None
                ) -> tuple[PyTree, NonNegState]:
    del state
    if params is None:
      raise _missing_params(caller)
    resolved = _tree.resolve(params, mask=mask, caller=caller, require_selection=True)
    new_updates, stats = _tree.map_selected(
        resolved, lambda spec, p, u: _non_neg_leaf(p, u), params, updates, caller=caller)
    counts, sizes, faulty = zip(*stats)
    return new_updates, NonNegState(_fraction(list(counts), sum(sizes), list(faulty)))

  return optax.GradientTransformation(init_fn, update_fn)


def project_non_neg(params: PyTree, *, mask: Mask = None) -> PyTree:
  """Sets the negative entries of every selected leaf to zero (Keras's ``NonNeg``).

  NaN entries stay NaN.

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_non_neg({"k": jnp.array([[-1.0, 2.0]])})["k"]
    Array([[0., 2.]], dtype=float32)
  """
  caller = "project_non_neg"
  out, _ = _tree.map_selected(_tree.resolve(params, mask=mask, caller=caller),
                              lambda spec, w: (jnp.maximum(w, 0), None), params, caller=caller)
  return out


# ---------------------------------------------------------------- norms


def neuron_norms(params: PyTree, *, axis: LeafAxis = None, neuron_axis: LeafAxis = None,
                 mask: Mask = None) -> PyTree:
  """The Euclidean norm of every neuron of every selected leaf.

  Computed in float32 (or the leaf's dtype, if wider), right for any finite
  weights, with the reduced axes removed: ``out`` norms for a ``(in, out)``
  Dense or ``(kh, kw, in, out)`` Conv kernel, and for an Equinox ``(out, in)``
  Linear weight.

  Args:
    params: a pytree of arrays.
    axis: as for :func:`max_norm`.
    neuron_axis: as for :func:`max_norm`.
    mask: which leaves to measure; by default every kernel.

  Returns:
    A pytree with the structure of ``params``: the norms for each selected leaf
    and ``None`` for the others (so ``jax.tree.leaves`` lists only the norms).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "bias": jnp.zeros(2)}
    >>> mnj.neuron_norms(params)
    {'bias': None, 'kernel': Array([5., 1.], dtype=float32)}
    >>> mnj.neuron_norms(params, neuron_axis=0)["kernel"]   # rows as neurons
    Array([3.       , 4.1231055], dtype=float32)
  """
  caller = "neuron_norms"
  resolved = _tree.resolve(params, mask=mask, caller=caller,
                           layout=_tree.layout(axis, neuron_axis, caller=caller))

  def one(spec: LeafSpec, w: jax.Array) -> tuple[jax.Array, None]:
    x = w.astype(_numerics.accumulation_dtype(w.dtype))
    return jnp.squeeze(_numerics.neuron_norms((x,), spec.axes).value, axis=spec.axes), None

  out, _ = _tree.map_selected(resolved, one, params, caller=caller, unselected=lambda _: None)
  return out
