"""Running a per-leaf function over the leaves that a constraint selects.

Every constraint and pure function here does the same four things: flatten the
params, decide which leaves to act on (the mask), check each of them and find
where its neurons are (the layout) and what its bounds are, then map a per-leaf
function over them and unflatten. :func:`plan` does the first three, once per
trace; :meth:`Plan.map` the last, over the params and, for a transformation,
the updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maxnorm_jax import _hyperparams, _layouts
from maxnorm_jax._selection import Leaf, Mask, flatten, selection

PyTree = Any


class Site(NamedTuple):
  """A selected leaf, as the per-leaf function sees it.

  Attributes:
    path: the leaf's path, ``"Dense_0/kernel"``, for messages.
    axes: the axes a neuron's norm reduces over (``()`` for elementwise
      constraints).
    bounds: the leaf's value of each per-leaf hyperparameter, by name.
  """
  path: str
  axes: tuple[int, ...]
  bounds: Mapping[str, Any]


class Plan(NamedTuple):
  """The static decisions about a params tree: one Site, or None, per leaf."""
  treedef: Any
  sites: tuple[Site | None, ...]

  def map(self, fn: Callable[..., tuple[Any, Any]], *trees: PyTree, owner: str,
          unselected: Callable[..., Any] = lambda *leaves: leaves[-1]
          ) -> tuple[PyTree, list[Any]]:
    """Applies ``fn(site, *leaves) -> (new_leaf, aux)`` to every selected leaf.

    Args:
      fn: the per-leaf function; it gets the leaf of each tree, in order.
      *trees: the params, then (for a transformation) the updates; each must
        have the structure of the params, and its selected leaves their shapes.
      owner: the calling constraint's name, for error messages.
      unselected: what a leaf that is not selected becomes, from its leaves
        (by default, that of the last tree: params are returned as they are,
        updates pass through).

    Returns:
      ``(tree, auxes)``: the new tree, with the structure of the params, and
      ``fn``'s second output for each selected leaf, in order.

    Raises:
      ValueError: if a tree does not have the structure of the params, or one
        of its selected leaves does not have the shape of the parameter.
    """
    columns = [self._leaves(tree, owner) for tree in trees]
    out, auxes = [], []
    for site, *leaves in zip(self.sites, *columns):
      if site is None:
        out.append(unselected(*leaves))
        continue
      shapes = [np.shape(x) for x in leaves]
      if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(
            f"{owner}: the update for leaf '{site.path}' has shape {shapes[-1]}, but the "
            f"parameter has shape {shapes[0]}. Updates must have the shapes of the params.")
      new, aux = fn(site, *(jnp.asarray(x) for x in leaves))
      out.append(new)
      auxes.append(aux)
    return jax.tree_util.tree_unflatten(self.treedef, out), auxes

  def _leaves(self, tree: PyTree, owner: str) -> list[Any]:
    try:
      return self.treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
      raise ValueError(
          f"{owner}: updates and params must have the same structure.\n  updates:"
          f" {jax.tree.structure(tree)}\n  params:  {self.treedef}") from e


def check_float_leaf(leaf: Leaf, *, owner: str) -> None:
  """Raises a ValueError naming the leaf if it is not a floating-point array."""
  dtype = jnp.result_type(leaf.value)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{owner}: leaf '{leaf.name}' has dtype {dtype}; constraints "
        "apply to floating-point weights only. Leave it out of the mask.")


def plan(params: PyTree, *, mask: Mask, owner: str, layout: _layouts.Layout | None,
         bounds: Mapping[str, _hyperparams.Bound] | None = None,
         require_selection: bool = False) -> Plan:
  """Selects and checks the leaves to act on (static; at ``init`` and at trace).

  Args:
    params: the parameter pytree.
    mask: which leaves to select; see :mod:`maxnorm_jax._selection`.
    owner: the calling constraint's name, for error messages.
    layout: where neurons lie; None for an elementwise constraint.
    bounds: per-leaf hyperparameters by name (see
      :mod:`maxnorm_jax._hyperparams`), resolved for each selected leaf.
    require_selection: raise if the mask selects nothing (transformations do:
      a constraint that constrains nothing is a mistake).

  Raises:
    ValueError: for a mask that does not fit the params or (if required)
      selects nothing, a selected leaf that is not floating point or does not
      fit the layout, or a bound tree that does not fit the params.
  """
  leaves, treedef = flatten(params)
  selected = selection(params, leaves, mask, default=_layouts.is_kernel, owner=owner)
  if require_selection and not any(selected):
    raise ValueError(
        f"{owner} selects no parameter to constrain: "
        + ("with mask=None it takes every leaf of rank >= 2, and there is none."
           if mask is None else "the mask is False everywhere."))
  values = {name: _hyperparams.per_leaf(name, spec, params, leaves, selected, owner=owner)
            for name, spec in (bounds or {}).items()}
  sites: list[Site | None] = []
  for i, (leaf, chosen) in enumerate(zip(leaves, selected)):
    if not chosen:
      sites.append(None)
      continue
    check_float_leaf(leaf, owner=owner)
    axes = () if layout is None else _layouts.reduction_axes(leaf, layout, owner=owner)
    sites.append(Site(leaf.name, axes, {name: v[i] for name, v in values.items()}))
  # `flatten` skips None, as jax.tree.flatten does, so the sites line up with
  # treedef's leaves.
  return Plan(treedef, tuple(sites))
