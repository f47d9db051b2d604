"""2-D convolution as one matrix multiplication (im2col), for XLA:CPU.

XLA:CPU computes this network's 3x3 convolutions, forward and backward, more
slowly than it multiplies matrices of the same FLOP count (the whole train step
is 1.6x faster with this module; see ``benchmarks/README.md``). Gathering the
3x3 patches into the channel axis (``kh*kw*cin`` wide) and multiplying by the
reshaped kernel is the same sum in another order, so it agrees with
``lax.conv_general_dilated`` to float rounding, and autodiff gives its
backward pass as matrix multiplications and slices too. GPUs and TPUs have
fast native convolutions; use this on CPU (``conv_impl="auto"`` does).

:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature, so
it plugs into ``nnx.Conv(..., conv_general_dilated=...)``. It handles 2-D
NHWC x HWIO convolutions with no dilation and one feature group (strides and
explicit or ``VALID``/``SAME`` padding included) and passes anything else to
``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated"]

_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                      out_spec=(0, 3, 1, 2))


def _is_nhwc_hwio(dimension_numbers: Any, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == _NHWC_HWIO
  return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def _trivial(dilation: Sequence[int] | None) -> bool:
  return dilation is None or all(d == 1 for d in dilation)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None, **kwargs: Any) -> jax.Array:
  """``lax.conv_general_dilated``, computed as im2col + one matmul where it can."""
  supported = (_is_nhwc_hwio(dimension_numbers, lhs.ndim) and _trivial(lhs_dilation)
               and _trivial(rhs_dilation) and feature_group_count == 1
               and batch_group_count == 1 and kwargs.get("out_sharding") is None)
  if not supported:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type, **kwargs)
  kh, kw, cin, cout = rhs.shape
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  (pt, pb), (pl, pr) = padding
  if any((pt, pb, pl, pr)):
    lhs = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  ho = (lhs.shape[1] - kh) // sh + 1
  wo = (lhs.shape[2] - kw) // sw + 1
  # Patches in (kh, kw, cin) order, matching the HWIO kernel's reshape.
  patches = jnp.concatenate(
      [lhs[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
       for i in range(kh) for j in range(kw)], axis=-1)
  out = jnp.dot(patches.reshape(-1, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
                precision=precision, preferred_element_type=preferred_element_type)
  return out.reshape(lhs.shape[0], ho, wo, cout)
