"""Neuron norms that are right for any finite weights, in one pass over a leaf.

A neuron's norm is ``sqrt(sum(w * w))`` over its axes, accumulated in float32
(or the leaf's dtype, if wider). Squaring overflows for norms beyond about
1.8e19 in float32 and loses precision for norms below about 1e-19, so the same
pass also sums the squares of ``w * 2**-big`` and (when small norms matter) of
``w * 2**small``, and each neuron takes the sum that is in range. Scaling by a
power of two is exact, so an ordinary neuron's norm is the plain one, bit for
bit, and no branch or second pass over the leaf is needed.
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
  """Per-neuron norms (reduced axes kept as size 1): ``value = scaled * 2**exponent``.

  Attributes:
    value: the norm; inf when it exceeds the float range, NaN or inf for a
      neuron that holds a NaN or an inf.
    scaled: the norm times ``2**-exponent``, in range for any finite neuron.
    exponent: int32, 0 for an ordinary neuron.
    finite: False for a neuron that holds a NaN or an inf.
  """
  value: jax.Array
  scaled: jax.Array
  exponent: jax.Array
  finite: jax.Array


def neuron_norms(x: jax.Array, axes: tuple[int, ...], *, small_norms_matter: bool = True
                 ) -> NeuronNorms:
  """The norms of the neurons of ``x`` (already in its accumulation dtype).

  Args:
    x: the leaf.
    axes: the axes a neuron's norm reduces over.
    small_norms_matter: False when norms below :func:`underflow_limit` may be
      approximate (``max_norm(c)`` leaves such neurons alone); it saves one sum.
  """
  big, small = _exponents(x.dtype)
  size = int(np.prod([x.shape[a] for a in axes]))

  def sum_of_squares(scale: float) -> jax.Array:
    y = x if scale == 1 else x * jnp.asarray(scale, x.dtype)
    return jnp.sum(y * y, axis=axes, keepdims=True)

  plain, shrunk = sum_of_squares(1.0), sum_of_squares(2.0 ** -big)
  overflow = plain == jnp.inf
  exponent = jnp.where(overflow, big, 0)
  sq = jnp.where(overflow, shrunk, plain)
  if small_norms_matter:
    underflow = plain < underflow_limit(x.dtype, size)
    exponent = jnp.where(underflow, -small, exponent)
    sq = jnp.where(underflow, sum_of_squares(2.0 ** small), sq)
  scaled = jnp.sqrt(sq)
  # The shrunk sum is finite for any finite neuron; an inf or a NaN makes it non-finite.
  return NeuronNorms(jnp.ldexp(scaled, exponent), scaled, exponent, jnp.isfinite(shrunk))
