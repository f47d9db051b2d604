"""Choosing which parameters a constraint applies to.

A constraint acts on a *selection* of the leaves of a parameter pytree. The
selection comes from a ``mask``:

* ``None``: every kernel, i.e. every leaf of rank >= 2, except the biases of
  Equinox's convolutions (shape ``(out, 1, ..., 1)``). Biases, scales and other
  vectors are left alone.
* a pytree of Python bools with the structure of the params, or a prefix of it
  (a bool at an inner node applies to the whole subtree);
* a callable ``params -> pytree of bools`` such as :func:`paths_matching`.

Parameter paths are rendered as their keys joined by ``/``: ``{"Dense_0":
{"kernel": w}}`` has the path ``"Dense_0/kernel"``. The trailing ``.value`` of a
Flax NNX ``Variable`` is not part of a path, so a pattern means the same thing
whether the tree holds Variables or raw arrays.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any
KeyPath = tuple[Any, ...]
Mask = PyTree | Callable[[PyTree], PyTree] | None


def _key_name(key: Any) -> str:
  """The plain name of one key of a JAX key path."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def path_to_str(path: KeyPath) -> str:
  """Renders a JAX key path as ``"a/b/c"``, without an NNX ``.value`` suffix.

  Examples:
    >>> import jax
    >>> (path, _), = jax.tree_util.tree_flatten_with_path(
    ...     {"Dense_0": {"kernel": 1.0}})[0]
    >>> path_to_str(path)
    'Dense_0/kernel'
  """
  keys = list(path)
  if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
    keys = keys[:-1]
  return "/".join(_key_name(k) for k in keys)


class paths_matching:  # noqa: N801 -- used like a function: mask=paths_matching(...)
  """A mask that selects the parameters whose path matches a regex.

  Paths are keys joined by ``/`` (see the module docstring) and each pattern is
  applied with :func:`re.search`, so anchor it (``$``, ``^``) to be precise.
  A leaf is selected when any pattern matches its path. Each pattern must
  match at least one parameter: a pattern that matches nothing is almost
  always a typo, and silently constraining nothing would hide it.

  The result is a callable ``params -> pytree of bools``, so it works as the
  ``mask`` of every constraint here and of ``optax.masked``. With
  ``optax.inject_hyperparams``, list ``"mask"`` in ``static_args``: otherwise
  optax takes any callable argument for a schedule.

  Args:
    *patterns: one or more regular expressions.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import maxnorm_jax as mnj
    >>> params = {"Conv_0": {"kernel": jnp.ones((3, 3, 3, 8))},
    ...           "Dense_0": {"kernel": jnp.ones((16, 4)), "bias": jnp.ones(4)}}
    >>> mnj.paths_matching(r"Dense_0/kernel$")(params)
    {'Conv_0': {'kernel': False}, 'Dense_0': {'bias': False, 'kernel': True}}
    >>> tx = optax.chain(optax.adam(1e-3),
    ...                  mnj.max_norm(3.0, mask=mnj.paths_matching(r"Dense_0/kernel$")))
  """

  def __init__(self, *patterns: str):
    if not patterns:
      raise ValueError("paths_matching needs at least one regular expression.")
    compiled = []
    for pattern in patterns:
      if not isinstance(pattern, str):
        raise TypeError(
            f"paths_matching takes regular expressions as str, got {pattern!r}"
            f" of type {type(pattern).__name__}.")
      try:
        compiled.append(re.compile(pattern))
      except re.error as e:
        raise ValueError(f"paths_matching: invalid regular expression {pattern!r}: {e}") from e
    self.patterns: tuple[str, ...] = tuple(patterns)
    self._compiled = tuple(compiled)

  def __repr__(self) -> str:
    return f"paths_matching({', '.join(repr(p) for p in self.patterns)})"

  def __call__(self, params: PyTree) -> PyTree:
    if isinstance(params, (jax.Array, np.ndarray, int, float)) and np.ndim(params) == 0:
      raise TypeError(
          f"{self!r} was called with a scalar instead of a parameter pytree. "
          "optax.inject_hyperparams treats every callable argument as a "
          "schedule and calls it with the step count: pass "
          "static_args=('mask',) to optax.inject_hyperparams.")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path_to_str(path) for path, _ in flat]
    hits = [[bool(rx.search(p)) for p in paths] for rx in self._compiled]
    for pattern, pattern_hits in zip(self.patterns, hits):
      if not any(pattern_hits):
        shown = ", ".join(paths[:20]) + (", ..." if len(paths) > 20 else "")
        raise ValueError(
            f"paths_matching: pattern {pattern!r} matches no parameter path. "
            f"The paths are: {shown or '(none)'}.")
    selected = [any(col) for col in zip(*hits)]
    return jax.tree_util.tree_unflatten(treedef, selected)


class Leaf(NamedTuple):
  """One leaf of a parameter pytree, and where it lives.

  Attributes:
    path: its key path.
    value: the leaf.
    owner: the class of the nearest enclosing node that is not a dict, list or
      tuple (an Equinox module, an NNX ``Variable``...), or None.
    field: the key of the leaf, or of the container holding it, in ``owner``.
  """
  path: KeyPath
  value: Any
  owner: type | None
  field: str | None

  @property
  def name(self) -> str:
    return path_to_str(self.path)


_CONTAINERS = (dict, list, tuple)


def is_leaf(x: Any) -> bool:
  """Whether ``x`` is a pytree leaf (None and other childless nodes are not)."""
  return (jax.tree_util.treedef_is_leaf(jax.tree.structure(x))
          and len(jax.tree.leaves(x)) == 1)


def flatten(params: PyTree) -> tuple[list[Leaf], Any]:
  """The leaves of ``params`` in ``jax.tree.flatten`` order, with their owners.

  The tree is walked one level at a time, so that each leaf knows the object
  that holds it: an Equinox module keeps its class in the tree, and its layout
  follows from it without importing Equinox.
  """
  leaves: list[Leaf] = []

  def walk(node: Any, path: KeyPath, owner: type | None, field: str | None) -> None:
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(node)):  # or childless: None...
      if is_leaf(node):
        leaves.append(Leaf(path, node, owner, field))
      return
    children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    container = type(node) in _CONTAINERS
    for (key,), child in children:
      walk(child, (*path, key), owner if container else type(node),
           field if container else _key_name(key))

  walk(params, (), None, None)
  return leaves, jax.tree.structure(params)


def broadcast_prefix(prefix: PyTree, params: PyTree, *, what: str, owner: str) -> list[Any]:
  """The value that a prefix tree gives to every leaf of ``params``, in order.

  A value at an inner node of ``prefix`` applies to the whole subtree below it,
  and ``None`` is a value like any other (not an empty subtree).

  Raises:
    ValueError: if ``prefix`` is not a prefix of the structure of ``params``.
  """
  treedef = jax.tree.structure(params)
  try:
    expanded = jax.tree.map(lambda value, subtree: jax.tree.map(lambda _: value, subtree),
                            prefix, params, is_leaf=lambda x: x is None)
    return treedef.flatten_up_to(expanded)  # type: ignore[attr-defined]
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{owner}: {what} does not match the params. It must have the structure "
        "of the params, or a prefix of it, with a value at each of its leaves."
        f"\n  {what}: {jax.tree.structure(prefix, is_leaf=lambda x: x is None)}"
        f"\n  params: {treedef}") from e


def selection(params: PyTree, leaves: list[Leaf], mask: Mask, *,
              default: Callable[[Leaf], bool], owner: str) -> list[bool]:
  """One bool per leaf: whether ``mask`` (or ``default``, if it is None) selects it.

  Raises:
    ValueError: if the mask does not match the params, or a mask leaf is not a
      static bool.
  """
  if mask is None:
    return [default(leaf) for leaf in leaves]
  flags = broadcast_prefix(mask(params) if callable(mask) else mask, params, what="the mask",
                           owner=owner)
  selected = []
  for leaf, flag in zip(leaves, flags):
    if not isinstance(flag, (bool, np.bool_)):
      raise ValueError(
          f"{owner}: the mask must hold Python bools, but its value for "
          f"'{leaf.name}' is {flag!r}. Masks are static: they decide "
          "which leaves are constrained when the step is traced.")
    selected.append(bool(flag))
  return selected
