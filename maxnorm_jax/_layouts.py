"""Where the neurons of a kernel lie, and so which axes a neuron's norm reduces over.

A *neuron* is one slice of a kernel along its output axis: the incoming weight
vector of one unit. Libraries disagree on where that axis is:

* Flax (NNX and Linen), Haiku and Keras keep it **last**: Dense ``(in, out)``,
  Conv ``(kh, kw, in, out)``. This is the default.
* Equinox (like PyTorch) keeps it **first**: ``eqx.nn.Linear`` has ``weight``
  ``(out, in)``, ``eqx.nn.Conv*`` and ``eqx.nn.ConvTranspose*`` have
  ``(out, in, kh, kw, ...)``. A params tree made with ``eqx.filter`` keeps the
  module classes, so these weights are recognised and get ``neuron_axis=0``
  without any option. Any other array inside an Equinox module has no known
  layout and is refused, so that it is never normalised along the wrong axis.

Two options override the default for every constrained leaf:

* ``neuron_axis=k``: the axis that indexes the neurons; the norm is taken over
  all the others.
* ``axis=...``: Keras's meaning, the axes to reduce *over* (an int or a tuple).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from maxnorm_jax._selection import Leaf

Axis = int | Sequence[int] | None

# Equinox layers whose `weight` holds one neuron per row, in their own class
# names: eqx.nn.Linear, eqx.nn.Conv (Conv1d/2d/3d) and eqx.nn.ConvTranspose
# (ConvTranspose1d/2d/3d, whose `weight` is (out, in, ...) as well).
_EQUINOX_NEURON_FIRST = frozenset({"Linear", "Conv", "ConvTranspose"})


class Layout(NamedTuple):
  """How to find the neurons of a leaf: by default, or as the user said.

  At most one field is set. ``axis`` holds Keras-style axes to reduce over,
  ``neuron_axis`` the one axis that indexes the neurons.
  """
  axis: tuple[int, ...] | None = None
  neuron_axis: int | None = None


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def layout(axis: Axis, neuron_axis: int | None, *, owner: str) -> Layout:
  """Validates the form of ``axis`` and ``neuron_axis`` when a constraint is built.

  Raises:
    TypeError: if either is not a static int (or, for ``axis``, a sequence of
      ints): a traced array, as ``optax.inject_hyperparams`` makes of an int,
      included.
    ValueError: if both are given, or ``axis`` is empty.
  """
  for name, value in (("axis", axis), ("neuron_axis", neuron_axis)):
    if isinstance(value, (jax.Array, np.ndarray)):
      raise TypeError(
          f"{owner}: {name} must be a static int{' or tuple of ints' if name == 'axis' else ''}"
          f", got an array. With optax.inject_hyperparams, pass static_args=('{name}',).")
  if axis is not None and neuron_axis is not None:
    raise ValueError(
        f"{owner}: pass axis= (Keras's: the axes to reduce over) or neuron_axis= (the "
        "axis that indexes the neurons), not both.")
  if neuron_axis is not None:
    if not _is_int(neuron_axis):
      raise TypeError(f"{owner}: neuron_axis must be an int, got {neuron_axis!r}.")
    return Layout(neuron_axis=int(neuron_axis))
  if axis is None:
    return Layout()
  if _is_int(axis):
    axes: tuple[Any, ...] = (axis,)
  elif isinstance(axis, (tuple, list)):
    axes = tuple(axis)
  else:
    raise TypeError(f"{owner}: axis must be an int or a tuple of ints, got {axis!r}.")
  if not axes:
    raise ValueError(f"{owner}: axis=() reduces over no axis; give at least one.")
  if not all(_is_int(a) for a in axes):
    raise TypeError(f"{owner}: axis must be an int or a tuple of ints, got {axis!r}.")
  return Layout(axis=tuple(int(a) for a in axes))


def _equinox_classes(owner: type | None) -> list[str]:
  """The names of the Equinox classes among ``owner``'s bases (empty: not Equinox)."""
  if owner is None:
    return []
  return [c.__name__ for c in owner.__mro__ if c.__module__.partition(".")[0] == "equinox"]


def _equinox_neuron_first(leaf: Leaf) -> bool | None:
  """True for the ``weight`` of an Equinox Linear/Conv/ConvTranspose, False for
  any other array inside an Equinox module, None outside Equinox."""
  names = _equinox_classes(leaf.owner)
  if not names:
    return None
  return leaf.field == "weight" and not _EQUINOX_NEURON_FIRST.isdisjoint(names)


def is_kernel(leaf: Leaf) -> bool:
  """The default mask: rank >= 2, but not the ``(out, 1, ..., 1)`` bias of an
  Equinox convolution."""
  if np.ndim(leaf.value) < 2:
    return False
  names = _equinox_classes(leaf.owner)
  return not (leaf.field == "bias" and not _EQUINOX_NEURON_FIRST.isdisjoint(names))


def reduction_axes(leaf: Leaf, layout: Layout, *, owner: str) -> tuple[int, ...]:
  """The axes that a neuron's norm reduces over, for this leaf.

  Returns:
    Sorted, non-negative axes.

  Raises:
    ValueError: if the leaf's rank does not fit the layout, the layout names an
      axis twice, or the leaf sits in an Equinox module of unknown layout.
  """
  shape = tuple(np.shape(leaf.value))
  ndim = len(shape)
  where = f"leaf '{leaf.name}' of shape {shape} (rank {ndim})"
  if layout.axis is not None:
    for a in layout.axis:
      if not -ndim <= a < ndim:
        raise ValueError(f"{owner}: axis {_show(layout.axis)} is out of range for {where}.")
    axes = tuple(sorted(a % ndim for a in layout.axis))
    if len(set(axes)) != len(axes):
      raise ValueError(f"{owner}: axis {_show(layout.axis)} names the same axis twice for {where}.")
    return axes
  if layout.neuron_axis is not None:
    k = layout.neuron_axis
    if not -ndim <= k < ndim:
      raise ValueError(f"{owner}: neuron_axis={k} is out of range for {where}.")
    if ndim < 2:
      raise ValueError(
          f"{owner}: {where} has no axis left to take a neuron's norm over once "
          f"neuron_axis={k} is set aside. Leave it out of the mask.")
    return tuple(a for a in range(ndim) if a != k % ndim)
  neuron_first = _equinox_neuron_first(leaf)
  if neuron_first is False:
    raise ValueError(
        f"{owner}: {where} is in an Equinox {leaf.owner.__name__}, and only the `weight` "  # type: ignore[union-attr]
        "of Equinox's Linear, Conv and ConvTranspose has a known layout (neurons on axis "
        "0). Pass neuron_axis= (the axis that indexes its neurons) or axis= (the axes to "
        "reduce over), or leave it out with mask=.")
  if ndim < 2:
    raise ValueError(
        f"{owner}: leaf '{leaf.name}' has shape {shape}; by default a constrained "
        "leaf needs rank >= 2 (neurons on the last axis). Leave it out of the mask, "
        "or pass neuron_axis= or axis= to say where its neurons are.")
  return tuple(range(1, ndim)) if neuron_first else tuple(range(ndim - 1))


def _show(axes: tuple[int, ...]) -> str:
  return str(axes[0]) if len(axes) == 1 else str(axes)
