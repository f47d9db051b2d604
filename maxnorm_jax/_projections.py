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

Numerics, the same for every function here:

* Any finite weights are projected correctly: when a leaf's sum of squares
  overflows or underflows, its norms are taken from ``w / max|w|`` instead
  (see :mod:`maxnorm_jax._neurons`); other leaves take the fast path.
* A neuron that holds a NaN or an inf is left as it is: there is nothing
  sound to scale it to, and the NaN then shows where it came from.
* A bound that arrives traced and is invalid (negative, NaN, ``min > max``)
  makes the leaves it applies to NaN, instead of flipping their signs or
  switching the constraint off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from maxnorm_jax import _hyperparams, _layouts, _neurons
from maxnorm_jax._hyperparams import Bound, Scalar
from maxnorm_jax._leafwise import Plan, Site, plan
from maxnorm_jax._selection import Mask

PyTree = Any


class Shell(NamedTuple):
  """The allowed range of neuron norms, and how far to move towards it."""
  min_value: Scalar
  max_value: Scalar
  rate: Scalar

  @classmethod
  def at(cls, site: Site, rate: Scalar, *, owner: str) -> Shell:
    """The shell of one planned leaf, its concrete bounds checked."""
    lo, hi = site.bounds.get("min_value", 0.0), site.bounds["max_value"]
    _hyperparams.check_min_max(lo, hi, rate, owner=owner, where=f" for leaf '{site.path}'")
    return cls(lo, hi, rate)

  def _bounds(self, dtype: Any) -> tuple[Any, Any]:
    """The bounds in ``dtype`` when they are arrays (which may be of another float
    type, e.g. bf16 from ``inject_hyperparams``); Python numbers as they are."""
    return tuple(v.astype(dtype) if isinstance(v, jax.Array) else v  # type: ignore[return-value]
                 for v in (self.min_value, self.max_value))

  def scale(self, norms: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-neuron ``(scale, outside)``: the factor to apply, and whether to.

    ``outside`` is False for a neuron already in range (and for a NaN norm).
    A zero norm gets scale 1 instead of a division by zero.
    """
    lo, hi = self._bounds(norms.dtype)
    outside = (norms > hi) | (norms < lo)
    desired = self._desired(norms, jnp.clip(norms, lo, hi))
    safe = jnp.where(norms > 0, norms, jnp.ones_like(norms))
    return (desired / safe).astype(norms.dtype), outside

  def _desired(self, norms: jax.Array, clipped: jax.Array) -> jax.Array:
    rate = self.rate
    if isinstance(rate, (int, float)) and rate == 1:
      return clipped  # Skip 0 * norm, which is NaN for an infinite norm.
    rate = rate.astype(norms.dtype) if isinstance(rate, jax.Array) else rate
    return rate * clipped + (1 - rate) * norms

  def target(self, w: jax.Array, axes: tuple[int, ...]
             ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The slow path, for any finite ``w``: ``(projected, outside, norms, finite)``.

    ``w * desired / norm`` is written as ``rate * clip(norm) * (v / r) +
    (1 - rate) * w`` with ``v = w / 2**k ~ w / max|w|`` and ``r = |v|``
    (see :func:`maxnorm_jax._neurons.rescaled`), so no factor
    overflows or underflows, even when the norm itself exceeds the float range
    (it is then reported as inf). ``finite`` is False for a neuron that holds a
    NaN or an inf; such a neuron is never ``outside``.
    """
    lo, hi = self._bounds(w.dtype)
    v, r, norms, finite = _neurons.rescaled(w, axes)
    outside = finite & ((norms > hi) | (norms < lo))
    direction = v / jnp.where(r > 0, r, jnp.ones_like(r))
    clipped = jnp.clip(norms, lo, hi)
    rate = self.rate
    if isinstance(rate, (int, float)) and rate == 1:
      return clipped * direction, outside, norms, finite
    rate = rate.astype(w.dtype) if isinstance(rate, jax.Array) else rate
    return rate * clipped * direction + (1 - rate) * w, outside, norms, finite

  def unreliable(self, sq: jax.Array, shape: tuple[int, ...], axes: tuple[int, ...]
                 ) -> jax.Array:
    """Whether a leaf with sums of squares ``sq`` needs the slow path.

    Always when a sum overflowed. When one is so small that it may have lost
    precision, only if such a norm may be moved, i.e. if ``min_value > 0`` or
    ``max_value`` is tiny: ``max_norm(c)`` leaves small neurons alone whatever
    their exact norm, so its zero and tiny neurons never pay for the slow path.
    """
    limit = _neurons.underflow_limit(sq.dtype, shape, axes)
    overflow = jnp.any(sq == jnp.inf)
    lo, hi = self.min_value, self.max_value
    concrete = not isinstance(lo, jax.core.Tracer) and not isinstance(hi, jax.core.Tracer)
    if concrete and float(lo) == 0 and float(hi) ** 2 >= 4 * limit:
      return overflow
    small_matters = (jnp.asarray(lo, jnp.float32) > 0) | (
        jnp.square(jnp.asarray(hi, jnp.float32)) < 4 * limit)
    return overflow | (small_matters & jnp.any(sq < limit))


class LeafResult(NamedTuple):
  """What a norm constraint reports about one leaf, for the telemetry."""
  outside: jax.Array      # int32 count of rescaled neurons
  neurons: int            # how many neurons the leaf has
  largest: jax.Array      # float32 largest norm of p + u before projection (0 if none;
                          # NaN for an invalid traced bound)
  faulty: jax.Array       # bool: a neuron was non-finite, or a traced bound invalid


def project_update_leaf(param: jax.Array, update: jax.Array, axes: tuple[int, ...],
                        shell: Shell) -> tuple[jax.Array, LeafResult]:
  """Rewrites ``update`` so that ``param + update`` lies in the shell.

  The result is in the accumulation dtype (float32 for bf16/fp16 leaves): in
  the leaf's own dtype, ``target - param`` would be rounded at the scale of
  ``param``, which can be far larger than the target (a bf16 neuron of norm
  300 projected onto norm 1 would land at 1.4, or on zero). ``apply_updates``
  adds it in float32 and casts back, so the new params are the target rounded
  once to their dtype.

  Returns:
    ``(new_update, result)``.
  """
  acc = _neurons.accumulation_dtype(param.dtype, update.dtype)
  p, u = param.astype(acc), update.astype(acc)
  sq = _neurons.squared_norms(p + u, axes)
  valid = _hyperparams.valid(*shell)

  # Each branch ends in the final select, so that XLA fuses the whole rewrite
  # into one pass over the kernel.
  def finish(projected: jax.Array, outside: jax.Array) -> jax.Array:
    new_update = jnp.where(outside, projected, u)
    return new_update if valid is None else jnp.where(valid, new_update, jnp.nan)

  def fast() -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    norms = jnp.sqrt(sq)
    scale, outside = shell.scale(norms)
    # (p + u) * scale - p, written so that p + u feeds the reduction alone: XLA
    # then fuses it there instead of writing it out, one pass fewer over the
    # kernel (see benchmarks/README.md).
    return finish(u * scale + p * (scale - 1), outside), outside, norms, jnp.isnan(norms)

  def slow() -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    target, outside, norms, finite = shell.target(p + u, axes)
    return finish(target - p, outside), outside, norms, ~finite

  new_update, outside, norms, nonfinite = _neurons.branch(
      shell.unreliable(sq, p.shape, axes), slow, fast)
  largest = jnp.max(norms, initial=0.0).astype(jnp.float32)
  faulty = jnp.any(nonfinite)
  if valid is not None:
    largest = jnp.where(valid, largest, jnp.float32(jnp.nan))
    faulty = faulty | ~valid
  return new_update, LeafResult(outside=jnp.sum(outside, dtype=jnp.int32),
                                neurons=outside.size, largest=largest, faulty=faulty)


def project_leaf(w: jax.Array, axes: tuple[int, ...], shell: Shell) -> jax.Array:
  """``w`` with every neuron outside the shell moved onto it (the pure function)."""
  x = w.astype(_neurons.accumulation_dtype(w.dtype))
  sq = _neurons.squared_norms(x, axes)
  valid = _hyperparams.valid(*shell)

  def finish(projected: jax.Array, outside: jax.Array) -> jax.Array:
    out = jnp.where(outside, projected.astype(w.dtype), w)
    return out if valid is None else jnp.where(valid, out, jnp.nan)

  def fast() -> jax.Array:
    scale, outside = shell.scale(jnp.sqrt(sq))
    return finish(x * scale, outside)

  def slow() -> jax.Array:
    projected, outside, _, _ = shell.target(x, axes)
    return finish(projected, outside)

  return _neurons.branch(shell.unreliable(sq, x.shape, axes), slow, fast)


def nonneg_update_leaf(param: jax.Array, update: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Rewrites ``update`` so that ``param + update >= 0``.

  Returns:
    ``(new_update, clipped, nonfinite)``: the update, which weights were
    clipped to zero, and which were NaN or inf (and so left as they were).
  """
  acc = _neurons.accumulation_dtype(param.dtype, update.dtype)
  candidate = param.astype(acc) + update.astype(acc)
  finite = jnp.isfinite(candidate)
  negative = finite & (candidate < 0)
  return jnp.where(negative, (-param).astype(update.dtype), update), negative, ~finite


def plan_shells(params: PyTree, bounds: dict[str, Bound], rate: Scalar, *,
                layout: _layouts.Layout, mask: Mask, owner: str,
                require_selection: bool = False) -> Plan:
  """Plans a norm constraint, and checks the concrete bounds of every leaf."""
  leaf_plan = plan(params, mask=mask, owner=owner, layout=layout, bounds=bounds,
                   require_selection=require_selection)
  for site in leaf_plan.sites:
    if site is not None:
      Shell.at(site, rate, owner=owner)
  return leaf_plan


def project(params: PyTree, bounds: dict[str, Bound], rate: Scalar, *, axis: _layouts.Axis,
            neuron_axis: int | None, mask: Mask, owner: str) -> PyTree:
  """Applies :func:`project_leaf` to every selected leaf of ``params``."""
  layout = _layouts.layout(axis, neuron_axis, owner=owner)
  out, _ = plan_shells(params, bounds, rate, layout=layout, mask=mask, owner=owner).map(
      lambda site, w: (project_leaf(w, site.axes, Shell.at(site, rate, owner=owner)), None),
      params, owner=owner)
  return out


def project_max_norm(params: PyTree, max_value: Bound = 3.0, *, axis: _layouts.Axis = None,
                     neuron_axis: int | None = None, mask: Mask = None) -> PyTree:
  """Projects every selected neuron onto the ball of radius ``max_value``.

  ``w -> w * min(1, max_value / ||w||)``, neuron by neuron. Neurons inside the
  ball are returned unchanged, bit for bit. Use it outside optax, for example
  to make freshly initialised weights feasible, or in a hand-written loop.

  Args:
    params: a pytree of arrays.
    max_value: the largest allowed neuron norm ``c`` (finite, > 0): a number, a
      pytree of numbers (a prefix of ``params``), or a callable
      ``(path, leaf) -> number``, as for :func:`max_norm`.
    axis: Keras-style axes to reduce over, instead of the default layout.
    neuron_axis: the axis that indexes the neurons, instead of the default
      layout (last axis; first for Equinox's Linear and Conv weights).
    mask: which leaves to constrain; by default every kernel.

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
  _hyperparams.check_bounds(0.0, max_value, 1.0, owner=owner)
  return project(params, {"max_value": max_value}, 1.0, axis=axis, neuron_axis=neuron_axis,
                 mask=mask, owner=owner)


def project_min_max_norm(params: PyTree, min_value: Bound = 0.0, max_value: Bound = 1.0,
                         rate: Scalar = 1.0, *, axis: _layouts.Axis = None,
                         neuron_axis: int | None = None, mask: Mask = None) -> PyTree:
  """Moves every selected neuron's norm towards ``[min_value, max_value]``.

  A neuron of norm ``n`` outside the range is rescaled to norm
  ``rate * clip(n, min_value, max_value) + (1 - rate) * n`` (Keras's
  ``MinMaxNorm``); neurons in range, and zero neurons, are unchanged. The
  bounds may vary by leaf, as for :func:`max_norm`.

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> w = jnp.array([[0.3, 6.0], [0.4, 8.0]])   # neuron norms 0.5 and 10
    >>> mnj.project_min_max_norm({"k": w}, 1.0, 2.0)["k"]
    Array([[0.6, 1.2],
           [0.8, 1.6]], dtype=float32)
  """
  owner = "project_min_max_norm"
  _hyperparams.check_bounds(min_value, max_value, rate, owner=owner)
  return project(params, {"min_value": min_value, "max_value": max_value}, rate, axis=axis,
                 neuron_axis=neuron_axis, mask=mask, owner=owner)


def project_unit_norm(params: PyTree, *, axis: _layouts.Axis = None,
                      neuron_axis: int | None = None, mask: Mask = None) -> PyTree:
  """Rescales every selected non-zero neuron to unit norm (Keras's ``UnitNorm``).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_unit_norm({"k": jnp.array([[3.0, 0.0], [4.0, 0.0]])})["k"]
    Array([[0.6, 0. ],
           [0.8, 0. ]], dtype=float32)
  """
  return project(params, {"min_value": 1.0, "max_value": 1.0}, 1.0, axis=axis,
                 neuron_axis=neuron_axis, mask=mask, owner="project_unit_norm")


def project_non_neg(params: PyTree, *, mask: Mask = None) -> PyTree:
  """Sets the negative entries of every selected leaf to zero (Keras's ``NonNeg``).

  NaN entries stay NaN (``jnp.maximum`` would keep them too).

  Examples:
    >>> import jax.numpy as jnp
    >>> import maxnorm_jax as mnj
    >>> mnj.project_non_neg({"k": jnp.array([[-1.0, 2.0]])})["k"]
    Array([[0., 2.]], dtype=float32)
  """
  owner = "project_non_neg"
  out, _ = plan(params, mask=mask, owner=owner, layout=None).map(
      lambda site, w: (jnp.maximum(w, 0), None), params, owner=owner)
  return out
