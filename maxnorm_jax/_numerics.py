"""Neuron norms that are right for any finite weights, in one pass over a leaf.

A neuron's norm is ``sqrt(sum(w * w))`` over its axes, accumulated in float32
(or the leaf's dtype, if wider). Squaring overflows for norms beyond about
1.8e19 in float32 and loses precision for norms below about 1e-19, so the same
pass also sums the squares of ``w * 2**-big`` and (when small norms matter) of
``w * 2**small``, and each neuron takes the sum that is in range. Scaling by a
power of two is exact, so an ordinary neuron's norm is the plain one, bit for
bit. On TPU and GPU this needs no branch and no second pass over the leaf; on
CPU the rescaled sums are taken only when a neuron needs them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def accumulation_dtype(*dtypes: Any) -> np.dtype:
  """The widest of ``dtypes`` and float32: norms of bf16/fp16 leaves use fp32.

  Chosen explicitly rather than by type promotion, so it also holds under
  ``jax_numpy_dtype_promotion="strict"``.
  """
  return max((np.dtype(jnp.float32), *map(np.dtype, dtypes)), key=lambda d: d.itemsize)


def _exponents(dtype: Any) -> tuple[int, int]:
  """``(big, small)``: ``w * 2**-big`` squares and sums without overflow for any
  finite ``w`` (up to 2**40 terms in float32), and ``w * 2**small`` squares to
  a normal number for any non-zero ``w`` while a sum of squares below
  :func:`underflow_limit` stays finite."""
  info = jnp.finfo(dtype)
  return info.maxexp // 2 + 20, info.nmant - info.minexp // 2 + 10


def underflow_limit(dtype: Any, size: int) -> float:
  """Below this, a sum of ``size`` squares in ``dtype`` may have lost precision.

  Each square under the smallest normal number ``tiny`` may be flushed to zero,
  so the sum is off by at most ``size * tiny``: less than ``eps`` relative to
  the sum once it exceeds ``size * tiny / eps``.
  """
  info = jnp.finfo(dtype)
  return size * float(info.tiny) / float(info.eps)


class NeuronNorms(NamedTuple):
  """Per-neuron norms (reduced axes kept as size 1): ``value = scaled / unit``.

  Attributes:
    value: the norm; inf when it exceeds the float range, NaN or inf for a
      neuron that holds a NaN or an inf.
    scaled: the norm times ``unit``, in range for any finite neuron.
    unit: the power of two the neuron was scaled by; 1 for an ordinary neuron.
    finite: False for a neuron that holds a NaN or an inf.
  """
  value: jax.Array
  scaled: jax.Array
  unit: jax.Array
  finite: jax.Array


def neuron_norms(terms: tuple[jax.Array, ...], axes: tuple[int, ...], *,
                 small_norms_matter: bool = True) -> NeuronNorms:
  """The norms of the neurons of ``x = sum(terms)`` (arrays in their accumulation dtype).

  Args:
    terms: the leaf ``x``, or ``(params, updates)`` when ``x = params + updates``:
      the sum is formed inside each reduction, so XLA need not write it out.
    axes: the axes a neuron's norm reduces over.
    small_norms_matter: False when norms below :func:`underflow_limit` may be
      approximate (``max_norm(c)`` leaves such neurons alone); it saves one sum.
  """
  dtype, shape = terms[0].dtype, terms[0].shape
  big, small = _exponents(dtype)
  size = int(np.prod([shape[a] for a in axes]))

  def sum_of_squares(scale: float) -> jax.Array:
    x = sum(terms[1:], terms[0])
    y = x if scale == 1 else x * jnp.asarray(scale, dtype)
    return jnp.sum(y * y, axis=axes, keepdims=True)

  plain = sum_of_squares(1.0)
  overflow = plain == jnp.inf
  underflow = plain < underflow_limit(dtype, size) if small_norms_matter else None
  scales = (2.0 ** -big, 2.0 ** small) if small_norms_matter else (2.0 ** -big,)

  def rescaled() -> tuple[jax.Array, ...]:
    return tuple(sum_of_squares(scale) for scale in scales)

  def rescaled_if_needed() -> tuple[jax.Array, ...]:
    needed = jnp.any(overflow if underflow is None else overflow | underflow)
    if not isinstance(needed, jax.core.Tracer):  # an eager call: no cond to compile
      return rescaled() if bool(needed) else (plain,) * len(scales)
    return jax.lax.cond(needed, rescaled, lambda: (plain,) * len(scales))

  # XLA:TPU and XLA:GPU take all the sums in Adam's pass over the leaf; XLA:CPU
  # would read the leaf once per sum, so there they wait for a neuron that needs them.
  if isinstance(plain, jax.core.Tracer):
    sums = jax.lax.platform_dependent(cpu=rescaled_if_needed, default=rescaled)
  else:
    sums = rescaled_if_needed()
  # Powers of two as constants, not ldexp: XLA may recompute these per weight.
  one = jnp.ones_like(plain)
  unit = jnp.where(overflow, jnp.asarray(2.0 ** -big, dtype), one)
  sq = jnp.where(overflow, sums[0], plain)
  if underflow is not None:
    unit = jnp.where(underflow, jnp.asarray(2.0 ** small, dtype), unit)
    sq = jnp.where(underflow, sums[1], sq)
  scaled = jnp.sqrt(sq)
  inverse = jnp.where(overflow, jnp.asarray(2.0 ** big, dtype), one)
  if underflow is not None:
    inverse = jnp.where(underflow, jnp.asarray(2.0 ** -small, dtype), inverse)
  # The shrunk sum is finite for any finite neuron; an inf or a NaN makes it non-finite.
  return NeuronNorms(scaled * inverse, scaled, unit, jnp.isfinite(sums[0]))
