"""Neuron norms: accurate for any finite weights, at the cost of one sum of squares.

A neuron's norm is ``sqrt(sum(w ** 2))`` over the axes of one neuron (see
:mod:`maxnorm_jax._layouts`), accumulated in float32 (or the leaf's dtype, if
wider). Squaring overflows for weights beyond about 1.8e19 in float32, and
underflows for neurons below about 1e-19; both would give a wrong norm (``inf``,
or 0). So the fast sum of squares is checked, per leaf, and only when it may be
wrong is the norm taken again from ``w / max|w|`` (the slow path, one more pass
over that leaf, taken inside ``lax.cond``, or by a Python ``if`` in an eager call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from maxnorm_jax import _layouts
from maxnorm_jax._leafwise import Site, plan
from maxnorm_jax._selection import Mask

PyTree = Any
T = TypeVar("T")


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


def underflow_limit(dtype: Any, shape: tuple[int, ...], axes: tuple[int, ...]) -> float:
  """Below this, a sum of squares in ``dtype`` may have lost precision.

  Each square under the smallest normal number ``tiny`` may be flushed to zero,
  so a sum of ``n`` squares is off by at most ``n * tiny``: relative to the sum,
  less than ``eps`` once the sum exceeds ``n * tiny / eps``.
  """
  info = jnp.finfo(dtype)
  n = int(np.prod([shape[a] for a in axes]))
  return n * float(info.tiny) / float(info.eps)


def rescaled(w: jax.Array, axes: tuple[int, ...]
             ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The slow path: ``(v, r, norms, finite)`` with ``v = w / 2**k`` and ``r = |v|``.

  ``2**k`` is the power of two just above ``max|w|``, so ``v`` is exact, no
  entry of it exceeds 1, and ``r`` lies in ``[0.5, sqrt(n)]`` for any finite
  non-zero neuron. (It multiplies by ``2**-k`` in two halves: ``2**-k`` alone
  is subnormal, and flushed to zero, for ``max|w|`` beyond 2**126.)
  ``norms = r * 2**k`` is inf when the true norm exceeds the float range.
  ``finite`` is False for a neuron that holds a NaN or an inf; a zero neuron
  has ``v = 0``, ``r = 0``.
  """
  m = jnp.max(jnp.abs(w), axis=axes, keepdims=True, initial=0.0)
  finite = jnp.isfinite(m)
  _, k = jnp.frexp(jnp.where(finite & (m > 0), m, jnp.ones_like(m)))
  one = jnp.ones_like(m)
  v = (w * jnp.ldexp(one, -(k // 2))) * jnp.ldexp(one, k // 2 - k)
  r = jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))
  return v, r, jnp.where(finite, jnp.ldexp(r, k), m), finite


def branch(unreliable: jax.Array, slow: Callable[[], T], fast: Callable[[], T]) -> T:
  """``slow()`` if ``unreliable`` else ``fast()``: ``lax.cond`` when traced.

  On concrete values (an eager call) it is a Python ``if``, so that eager calls
  run op by op as any JAX code does, instead of compiling a fresh ``cond`` of
  two new closures on every call.
  """
  if isinstance(unreliable, jax.core.Tracer):
    return jax.lax.cond(unreliable, slow, fast)
  return slow() if bool(unreliable) else fast()


def norms(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """Accurate norms of the neurons of ``w`` (reduced axes kept as size 1)."""
  w = w.astype(accumulation_dtype(w.dtype))
  sq = jnp.sum(w * w, axis=axes, keepdims=True)
  unreliable = jnp.any((sq == jnp.inf) | (sq < underflow_limit(w.dtype, w.shape, axes)))

  def slow() -> jax.Array:
    return rescaled(w, axes)[2]

  return branch(unreliable, slow, lambda: jnp.sqrt(sq))


def neuron_norms(params: PyTree, *, axis: _layouts.Axis = None, neuron_axis: int | None = None,
                 mask: Mask = None) -> PyTree:
  """The Euclidean norm of every neuron of every selected leaf.

  Norms are computed in float32 (or the leaf's dtype, if wider) and returned in
  that dtype, with the reduced axes removed: a ``(in, out)`` Dense kernel gives
  ``out`` norms, a ``(kh, kw, in, out)`` Conv kernel gives ``out`` norms, and
  an Equinox ``(out, in)`` Linear weight gives ``out`` norms. They are exact
  to float rounding for any finite weights (no overflow to ``inf`` for huge
  weights, no underflow to 0 for tiny ones).

  Args:
    params: a pytree of arrays.
    axis: Keras-style axes to reduce over, instead of the default layout.
    neuron_axis: the axis that indexes the neurons, instead of the default
      layout (last axis; first for Equinox's Linear and Conv weights).
    mask: which leaves to measure; by default every kernel. See
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
    >>> mnj.neuron_norms(params, neuron_axis=0)["kernel"]   # rows as neurons
    Array([3.       , 4.1231055], dtype=float32)
  """
  owner = "neuron_norms"
  layout = _layouts.layout(axis, neuron_axis, owner=owner)

  def one(site: Site, w: jax.Array) -> tuple[jax.Array, None]:
    return jnp.squeeze(norms(w, site.axes), axis=site.axes), None

  out, _ = plan(params, mask=mask, owner=owner, layout=layout).map(
      one, params, owner=owner, unselected=lambda _: None)
  return out
