"""Which leaves a constraint takes, where their neurons lie, and their bounds.

:func:`resolve` looks at a params tree once per trace (and at ``init``) and
returns one :class:`LeafSpec` per selected leaf: its path, the axes a neuron's
norm reduces over, and its bounds, already checked. :func:`map_selected` then
runs a per-leaf function over the params (and the updates).

Each per-leaf setting is resolved the same way (:func:`per_leaf`): one value for
every leaf, a pytree prefix of the params, or a callable ``(path, leaf) ->
value``. Paths are keys joined by ``/`` (``"Dense_0/kernel"``), without the
``.value`` of a Flax NNX ``Variable``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
KeyPath = tuple[Any, ...]
Mask = PyTree | Callable[[PyTree], PyTree] | None
Axis = int | Sequence[int] | None
# axis= / neuron_axis=: one value, a pytree prefix of the params, or (path, leaf) -> value.
LeafAxis = Axis | PyTree | Callable[[str, jax.Array], Axis]
Scalar = float | jax.Array
Bound = Scalar | PyTree | Callable[[str, jax.Array], Scalar]

# ---------------------------------------------------------------- paths


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
    >>> import maxnorm_jax as mnj
    >>> (path, _), = jax.tree_util.tree_flatten_with_path(
    ...     {"Dense_0": {"kernel": 1.0}})[0]
    >>> mnj.path_to_str(path)
    'Dense_0/kernel'
  """
  keys = list(path)
  if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
    keys = keys[:-1]
  return "/".join(_key_name(k) for k in keys)


class paths_matching:  # noqa: N801 -- used like a function: mask=paths_matching(...)
  """A mask that selects the parameters whose path matches a regex.

  Each pattern is applied to the paths (keys joined by ``/``) with
  :func:`re.search`; a leaf is selected when any pattern matches. A pattern
  that matches no path is an error (almost always a typo). With
  ``optax.inject_hyperparams``, list ``"mask"`` in ``static_args``.

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


# ---------------------------------------------------------------- leaves


class Leaf(NamedTuple):
  """One leaf of a params tree, and where it lives.

  Attributes:
    path: its key path.
    value: the leaf.
    module: the class of the nearest enclosing node that is not a dict, list or
      tuple (an Equinox module, an NNX ``Variable``...), or None.
    field: the key of the leaf, or of the container holding it, in ``module``.
  """
  path: KeyPath
  value: Any
  module: type | None
  field: str | None

  @property
  def name(self) -> str:
    return path_to_str(self.path)


_CONTAINERS = (dict, list, tuple)


def _is_leaf(x: Any) -> bool:
  """Whether ``x`` is a pytree leaf (None and other childless nodes are not)."""
  return (jax.tree_util.treedef_is_leaf(jax.tree.structure(x))
          and len(jax.tree.leaves(x)) == 1)


def flatten(params: PyTree) -> tuple[list[Leaf], Any]:
  """The leaves of ``params`` in ``jax.tree.flatten`` order, each with its module.

  The tree is walked one level at a time so that each leaf knows the object
  holding it: an Equinox module keeps its class in the tree, and its layout
  follows from it without importing Equinox.
  """
  leaves: list[Leaf] = []

  def walk(node: Any, path: KeyPath, module: type | None, field: str | None) -> None:
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(node)):  # or childless: None...
      if _is_leaf(node):
        leaves.append(Leaf(path, node, module, field))
      return
    children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    container = type(node) in _CONTAINERS
    for (key,), child in children:
      walk(child, (*path, key), module if container else type(node),
           field if container else _key_name(key))

  walk(params, (), None, None)
  return leaves, jax.tree.structure(params)


def _broadcast_prefix(prefix: PyTree, params: PyTree, *, what: str, caller: str,
                      is_value: Callable[[Any], bool] = lambda x: False) -> list[Any]:
  """The value a prefix tree gives each leaf of ``params`` (None is a value).

  ``is_value`` marks the nodes of ``prefix`` that are values, not subtrees (a
  tuple of axes).
  """
  treedef = jax.tree.structure(params)
  is_node_value = lambda x: x is None or is_value(x)  # noqa: E731
  try:
    try:
      expanded = jax.tree.map(lambda value, subtree: jax.tree.map(lambda _: value, subtree),
                              prefix, params, is_leaf=is_node_value)
    except (ValueError, TypeError):
      expanded = _expand_around_empty(prefix, params, is_node_value)
    return treedef.flatten_up_to(expanded)  # type: ignore[attr-defined]
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{caller}: {what} does not match the params. It must have the structure "
        "of the params, or a prefix of it, with a value at each of its leaves."
        f"\n  {what}: {jax.tree.structure(prefix, is_leaf=lambda x: x is None or is_value(x))}"
        f"\n  params: {treedef}") from e


def _one_level(tree: Any) -> tuple[list[Any], Any]:
  """The children of a pytree node, and its structure with them as leaves."""
  return jax.tree_util.tree_flatten(tree, is_leaf=lambda x: x is not tree)


def _expand_around_empty(prefix: PyTree, params: PyTree, is_node_value: Callable[[Any], bool]
                         ) -> PyTree:
  """Broadcasts ``prefix`` over ``params``, where a subtree of ``params`` without leaves
  (``optax.masked``'s ``MaskedNode``) matches any subtree of ``prefix``.

  Raises:
    ValueError: if ``prefix`` is not a prefix of ``params`` elsewhere.
  """
  if not jax.tree.leaves(params):
    return params
  if is_node_value(prefix) or _is_leaf(prefix):
    return jax.tree.map(lambda _: prefix, params)
  prefix_children, prefix_def = _one_level(prefix)
  params_children, params_def = _one_level(params)
  if prefix_def != params_def:
    raise ValueError(f"{prefix_def} does not match {params_def}")
  return params_def.unflatten([_expand_around_empty(a, b, is_node_value)
                               for a, b in zip(prefix_children, params_children)])


def _is_one_value(value: Any) -> bool:
  """True for a setting that is one value for every leaf (not a tree or callable)."""
  return value is not None and not callable(value) and _is_leaf(value)


def _is_callable(value: Any) -> bool:
  """A per-leaf setting given as a callable ``(path, leaf) -> value``."""
  return callable(value) and _is_leaf(value)


def per_leaf(what: str, value: Any, params: PyTree, leaves: list[Leaf],
             selected: list[bool], *, caller: str,
             is_value: Callable[[Any], bool] = lambda x: False,
             none_is_default: bool = False) -> list[Any]:
  """The value of a per-leaf setting at every leaf (None where not selected).

  ``value`` is one value for every leaf, a pytree prefix of ``params`` (None
  where a leaf is not selected), or a callable ``(path, leaf) -> value``.
  ``is_value`` marks the nodes that are one value, not a subtree (a tuple of
  axes). With ``none_is_default``, None is a value for a selected leaf too
  (its default), and an exception raised by the callable becomes a
  ValueError naming the leaf.
  """
  if _is_one_value(value) or is_value(value):
    return [value if chosen else None for chosen in selected]
  if _is_callable(value):
    out: list[Any] = []
    for leaf, chosen in zip(leaves, selected):
      if not chosen:
        out.append(None)
      elif not none_is_default:
        out.append(value(leaf.name, leaf.value))
      else:
        try:
          out.append(value(leaf.name, leaf.value))
        except Exception as e:
          raise ValueError(
              f"{caller}: the {what} callable raised for leaf '{leaf.name}' of shape "
              f"{np.shape(leaf.value)}: {type(e).__name__}: {e}") from e
    return out
  values = _broadcast_prefix(value, params, what=what, caller=caller, is_value=is_value)
  for leaf, chosen, v in zip(leaves, selected, values):
    if chosen and v is None and not none_is_default:
      raise ValueError(
          f"{caller}: {what} has no value for the constrained leaf '{leaf.name}'. Give "
          "it one, or leave the leaf out with mask=.")
  return [v if chosen else None for v, chosen in zip(values, selected)]


def _selection(params: PyTree, leaves: list[Leaf], mask: Mask, *, caller: str) -> list[bool]:
  """One bool per leaf: whether ``mask`` (by default, :func:`is_kernel`) selects it."""
  if mask is None:
    return [is_kernel(leaf) for leaf in leaves]
  flags = _broadcast_prefix(mask(params) if callable(mask) else mask, params,
                            what="the mask", caller=caller)
  selected = []
  for leaf, flag in zip(leaves, flags):
    if not isinstance(flag, (bool, np.bool_)):
      raise ValueError(
          f"{caller}: the mask must hold Python bools, but its value for "
          f"'{leaf.name}' is {flag!r}. Masks are static: they decide "
          "which leaves are constrained when the step is traced.")
    selected.append(bool(flag))
  return selected


# ---------------------------------------------------------------- layouts

# Equinox layers whose `weight` holds one neuron per row (out, in, ...), by
# class name: Linear, Conv (1d/2d/3d), ConvTranspose (1d/2d/3d).
_EQUINOX_NEURON_FIRST = frozenset({"Linear", "Conv", "ConvTranspose"})
# Equinox layers whose `weight` is a table of rows (one embedding vector each):
# constrained by rows, only when a mask selects it (a bound on a table is a
# modelling choice; the default mask leaves it out).
_EQUINOX_ROWS = frozenset({"Embedding"})


class Layout(NamedTuple):
  """Where a leaf's neurons are: by default (both None), or as the user said.

  ``axis`` holds Keras-style axes to reduce over, ``neuron_axis`` the axes
  that index the neurons; at most one is set.
  """
  axis: tuple[int, ...] | None = None
  neuron_axis: tuple[int, ...] | None = None


class PerLeafLayout(NamedTuple):
  """``axis`` or ``neuron_axis`` given per leaf (a pytree prefix or a callable).

  :func:`resolve` builds each selected leaf's :class:`Layout` from it.
  """
  name: str      # "axis" or "neuron_axis"
  setting: Any


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_axes(x: Any) -> bool:
  """An int, or a tuple or list that holds an int or nothing: axes, not a subtree."""
  return _is_int(x) or (isinstance(x, (tuple, list))
                        and (not x or any(_is_int(a) for a in x)))


def _axes(name: str, value: Any, *, caller: str, where: str = "") -> tuple[int, ...]:
  """``value`` (an int or a sequence of ints) as a non-empty tuple of ints.

  Raises:
    TypeError: if it is not an int or a sequence of ints.
    ValueError: if it is empty.
  """
  if _is_int(value):
    return (int(value),)
  if isinstance(value, (tuple, list)) and all(_is_int(a) for a in value):
    if not value:
      raise ValueError(f"{caller}: {name}=() names no axis{where}; give at least one.")
    return tuple(int(a) for a in value)
  raise TypeError(
      f"{caller}: {name} must be an int or a tuple of ints{where}, got {value!r}.")


def layout(axis: Any, neuron_axis: Any, *, caller: str) -> Layout | PerLeafLayout:
  """Checks the form of ``axis`` and ``neuron_axis`` when a constraint is built.

  Each is None, an int, a tuple of ints, or, per leaf, a pytree prefix of the
  params or a callable ``(path, leaf) -> value`` (checked leaf by leaf in
  :func:`resolve`).

  Raises:
    TypeError: if either is not a static int or tuple of ints (a traced array
      included), or a per-leaf setting.
    ValueError: if both are given, or either is empty.
  """
  for name, value in (("axis", axis), ("neuron_axis", neuron_axis)):
    if isinstance(value, (jax.Array, np.ndarray)):
      raise TypeError(
          f"{caller}: {name} must be a static int or tuple of ints, got an array. With "
          f"optax.inject_hyperparams, pass static_args=('{name}',).")
  if axis is not None and neuron_axis is not None:
    raise ValueError(
        f"{caller}: pass axis= (Keras's: the axes to reduce over) or neuron_axis= (the "
        "axes that index the neurons), not both.")
  name, value = ("axis", axis) if neuron_axis is None else ("neuron_axis", neuron_axis)
  if value is None:
    return Layout()
  if not _is_axes(value) and (_is_callable(value) or not _is_leaf(value)):
    return PerLeafLayout(name, value)
  return Layout(**{name: _axes(name, value, caller=caller)})


def _leaf_layout(spec: PerLeafLayout, value: Any, leaf: Leaf, *, caller: str) -> Layout:
  """The layout a per-leaf ``axis``/``neuron_axis`` gives ``leaf`` (None: the default)."""
  if value is None:
    return Layout()
  where = f" for leaf '{leaf.name}'"
  return Layout(**{spec.name: _axes(spec.name, value, caller=caller, where=where)})


def _equinox_classes(module: type | None) -> list[str]:
  """The names of the Equinox classes among ``module``'s bases (empty: not Equinox)."""
  if module is None:
    return []
  return [c.__name__ for c in module.__mro__ if c.__module__.partition(".")[0] == "equinox"]


def is_kernel(leaf: Leaf) -> bool:
  """The default mask: rank >= 2, but not an Equinox convolution's ``(out, 1, ..., 1)`` bias
  nor an Equinox ``Embedding``'s table (embeddings are opt-in)."""
  if np.ndim(leaf.value) < 2:
    return False
  names = _equinox_classes(leaf.module)
  return not ((leaf.field == "bias" and not _EQUINOX_NEURON_FIRST.isdisjoint(names))
              or (leaf.field == "weight" and not _EQUINOX_ROWS.isdisjoint(names)))


def _show(axes: tuple[int, ...]) -> str:
  return str(axes[0]) if len(axes) == 1 else str(axes)


def reduction_axes(leaf: Leaf, layout: Layout, *, caller: str,
                   per_leaf_axis: bool = False) -> tuple[int, ...]:
  """The sorted, non-negative axes that a neuron's norm reduces over, for this leaf.

  With ``per_leaf_axis`` (an ``axis`` given per leaf), reducing over every
  axis of the leaf is refused: a per-leaf layout says where the neurons are.

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
        raise ValueError(f"{caller}: axis {_show(layout.axis)} is out of range for {where}.")
    axes = tuple(sorted(a % ndim for a in layout.axis))
    if len(set(axes)) != len(axes):
      raise ValueError(
          f"{caller}: axis {_show(layout.axis)} names the same axis twice for {where}.")
    if per_leaf_axis and len(axes) == ndim:
      raise ValueError(
          f"{caller}: axis {_show(layout.axis)} reduces over every axis of {where}, so "
          "no axis is left to index its neurons. Name the axes to reduce over (a "
          "neuron's fan-in) only, or pass neuron_axis=.")
    return axes
  if layout.neuron_axis is not None:
    shown = _show(layout.neuron_axis)
    for k in layout.neuron_axis:
      if not -ndim <= k < ndim:
        raise ValueError(f"{caller}: neuron_axis={shown} is out of range for {where}.")
    kept = {k % ndim for k in layout.neuron_axis}
    if len(kept) != len(layout.neuron_axis):
      raise ValueError(
          f"{caller}: neuron_axis={shown} names the same axis twice for {where}.")
    if len(kept) == ndim:
      raise ValueError(
          f"{caller}: {where} has no axis left to take a neuron's norm over once "
          f"neuron_axis={shown} is set aside. Leave it out of the mask.")
    return tuple(a for a in range(ndim) if a not in kept)
  equinox = _equinox_classes(leaf.module)
  neuron_first = bool(equinox) and leaf.field == "weight" and not (
      (_EQUINOX_NEURON_FIRST | _EQUINOX_ROWS).isdisjoint(equinox))
  if equinox and not neuron_first:
    raise ValueError(
        f"{caller}: {where} is in an Equinox {leaf.module.__name__}, and only the `weight` "  # type: ignore[union-attr]
        "of Equinox's Linear, Conv and ConvTranspose (neurons on axis 0) and Embedding "
        "(rows) has a known layout. Pass neuron_axis= (the axis that indexes its neurons) "
        "or axis= (the axes to reduce over), or leave it out with mask=.")
  if ndim < 2:
    raise ValueError(
        f"{caller}: leaf '{leaf.name}' has shape {shape}; by default a constrained "
        "leaf needs rank >= 2 (neurons on the last axis). Leave it out of the mask, "
        "or pass neuron_axis= or axis= to say where its neurons are.")
  return tuple(range(1, ndim)) if neuron_first else tuple(range(ndim - 1))


# ---------------------------------------------------------------- layouts read from modules

# A layer's own layout for one of its params: (the shape the layer makes, its neuron
# axes); a str says why the layer cannot be read; None, no known layout.
OwnLayout = tuple[tuple[int, ...], tuple[int, ...]] | str | None


def einsum_neurons(equation: str, kernel_rank: int) -> tuple[int, ...] | str:
  """The kernel axes of an ``"inputs,kernel->output"`` einsum that reach its output.

  Returns a reason (a str) when the equation cannot be read that way.
  """
  compact = str(equation).replace(" ", "")
  if "->" not in compact or compact.count(",") != 1 or "." in compact:
    return f"its equation {equation!r} is not 'inputs,kernel->output' with explicit letters"
  operands, output = compact.split("->")
  kernel = operands.split(",")[1]
  if len(set(kernel)) != len(kernel) or len(kernel) != kernel_rank:
    return f"the kernel's letters in {equation!r} do not index its axes one by one"
  neurons = tuple(i for i, letter in enumerate(kernel) if letter in output)
  if not neurons or len(neurons) == len(kernel):
    return (f"in {equation!r} the kernel has no axis reduced over, or none "
            "that reaches the output")
  return neurons


class ModuleLayouts(NamedTuple):
  """How a library's modules say where their params' neurons lie.

  Attributes:
    owner: a leaf's path -> (its module, the module's name for the param); (None, "")
      when unknown.
    own_layout: (module, field) -> the layer's :data:`OwnLayout`.
    is_kernel: (module, field) -> whether the default mask selects it.
    known: the layouts read, for messages ("nnx.Linear, ... kernels").
    stack_hint: how a stack must be made for its layer axes to lead, for messages.
  """
  owner: Callable[[str], tuple[Any, str]]
  own_layout: Callable[[Any, str], OwnLayout]
  is_kernel: Callable[[Any, str], bool]
  known: str
  stack_hint: str


def stacked_neuron_axes(name: str, shape: tuple[int, ...], module: Any, field: str,
                        reader: ModuleLayouts, *, caller: str) -> tuple[int, ...]:
  """The neuron axes of a param of ``shape``: its layer's own, after the axes of a stack.

  Raises:
    ValueError: naming the leaf and the module's class, if the layer has no known
      layout or ``shape`` does not end in the shape the layer makes.
  """
  own = reader.own_layout(module, field)
  cls = type(module).__name__
  if own is None or isinstance(own, str):
    why = f"{own}, so it" if isinstance(own, str) else "it"
    raise ValueError(
        f"{caller}: the mask selects '{name}' of shape {shape}, the '{field}' of a {cls}, "
        f"but {why} has no layout {caller} knows (it reads those of {reader.known}). "
        "Leave it out with mask=, or constrain it with mnj.max_norm(..., neuron_axis=...) "
        "where its neurons are said per leaf.")
  own_shape, neurons = own
  stack = len(shape) - len(own_shape)
  if stack < 0 or tuple(shape[stack:]) != tuple(own_shape):
    raise ValueError(
        f"{caller}: '{name}' of a {cls} has shape {shape}, which does not end in the "
        f"{tuple(own_shape)} the layer makes: its layout cannot be read. The axes of a "
        f"stack must lead ({reader.stack_hint}); otherwise constrain it with "
        "mnj.max_norm(..., neuron_axis=...).")
  return tuple(range(stack)) + tuple(stack + a for a in neurons)


def module_layouts(params: PyTree, reader: ModuleLayouts, mask: Mask, *, caller: str
                   ) -> tuple[Callable[[str, Any], tuple[int, ...]], Callable[[PyTree], PyTree]]:
  """``(neuron_axis, mask)`` for a core constraint: the selected leaves, by path, and the
  neuron axes of each, read from its module.

  Raises:
    ValueError: if the mask selects nothing, or a leaf whose layout cannot be read.
  """
  leaves, _ = flatten(params)
  if mask is None:
    selected = [reader.is_kernel(*reader.owner(leaf.name)) for leaf in leaves]
  else:
    selected = _selection(params, leaves, mask, caller=caller)
  layouts: dict[str, tuple[int, ...]] = {}
  for leaf, chosen in zip(leaves, selected):
    if chosen:
      module, field = reader.owner(leaf.name)
      layouts[leaf.name] = stacked_neuron_axes(leaf.name, tuple(np.shape(leaf.value)),
                                               module, field, reader, caller=caller)
  if not layouts:
    raise ValueError(f"{caller}: the mask selects no parameter of the model.")
  return (lambda path, leaf: layouts[path]), lambda tree: jax.tree_util.tree_map_with_path(
      lambda path, _: path_to_str(path) in layouts, tree)


# ---------------------------------------------------------------- bounds


class Bounds(NamedTuple):
  """A norm constraint's bounds for one leaf (or for all, when built)."""
  min_value: Any
  max_value: Any
  rate: Any


def _concrete(name: str, value: Any, *, caller: str) -> float | None:
  """``value`` as a float, or None when it is traced.

  Raises:
    TypeError: if ``value`` is not a real scalar.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, bool) or not isinstance(
      value, (int, float, np.integer, np.floating, np.ndarray, jax.Array)):
    raise TypeError(f"{caller}: {name} must be a real number, got {value!r}.")
  if np.ndim(value) != 0:
    raise TypeError(f"{caller}: {name} must be a scalar, got shape {np.shape(value)}.")
  if not np.issubdtype(np.asarray(value).dtype, np.number) or np.iscomplexobj(value):
    raise TypeError(f"{caller}: {name} must be a real number, got {value!r}.")
  return float(value)


def check_bounds(bounds: Bounds, *, caller: str, leaf: str | None = None) -> None:
  """Checks the concrete bounds: of one leaf, or when built (trees, callables wait).

  Raises:
    TypeError: for a bound that is not a real scalar.
    ValueError: unless ``0 <= min_value <= max_value``, ``max_value`` is finite
      and > 0, and ``rate`` lies in [0, 1]. Messages name ``leaf``, if given.
  """
  where = "" if leaf is None else f" for leaf '{leaf}'"
  lo, hi = None, None
  for name, positive in (("min_value", False), ("max_value", True)):
    value = getattr(bounds, name)
    if leaf is None and value is not None and not _is_one_value(value):
      continue  # a tree or a callable: checked leaf by leaf
    v = _concrete(name + where, value, caller=caller)
    if v is not None and not ((v > 0 if positive else v >= 0) and math.isfinite(v)):
      raise ValueError(
          f"{caller}: {name}{where} must be finite and {'>' if positive else '>='} 0, got {v}.")
    lo, hi = (v, hi) if name == "min_value" else (lo, v)
  if lo is not None and hi is not None and lo > hi:
    raise ValueError(f"{caller}: min_value ({lo}) must not exceed max_value ({hi}){where}.")
  rate = _concrete("rate", bounds.rate, caller=caller)
  if rate is not None and not 0.0 <= rate <= 1.0:
    raise ValueError(f"{caller}: rate must lie in [0, 1], got {rate}.")


def traced_bounds_valid(bounds: Bounds) -> jax.Array | None:
  """A traced bool, whether traced bounds are valid; None if all are concrete (checked)."""
  if not any(isinstance(v, jax.core.Tracer) for v in bounds):
    return None
  lo, hi, rate = (jnp.asarray(v, jnp.float32) for v in bounds)
  return (lo >= 0) & (hi > 0) & (lo <= hi) & jnp.isfinite(hi) & (rate >= 0) & (rate <= 1)


# ---------------------------------------------------------------- resolving


class LeafSpec(NamedTuple):
  """A selected leaf, resolved once per trace.

  Attributes:
    path: the leaf's path, ``"Dense_0/kernel"``, for messages.
    axes: the axes a neuron's norm reduces over (``()`` for elementwise
      constraints).
    bounds: the leaf's checked bounds (None for elementwise constraints).
    shape: the leaf's shape.
  """
  path: str
  axes: tuple[int, ...]
  bounds: Bounds | None
  shape: tuple[int, ...] = ()


class Resolved(NamedTuple):
  """A params tree's structure and one LeafSpec, or None, per leaf."""
  treedef: Any
  specs: tuple[LeafSpec | None, ...]


def resolve(params: PyTree, *, mask: Mask, caller: str,
            layout: Layout | PerLeafLayout | None = None,
            bounds: Bounds | None = None, require_selection: bool = False) -> Resolved:
  """Selects the leaves to act on and resolves each one's axes and bounds.

  Args:
    params: the parameter pytree.
    mask: which leaves to select: None (every kernel), a pytree (prefix) of
      bools, or a callable ``params -> pytree of bools``.
    caller: the constraint's name, for messages.
    layout: where neurons lie, for every leaf or per leaf (from :func:`layout`);
      None for an elementwise constraint.
    bounds: a norm constraint's bounds, each resolved per leaf with
      :func:`per_leaf` and checked (``rate`` is one value for all leaves).
    require_selection: raise if the mask selects nothing.

  Raises:
    ValueError: for a mask that does not fit the params or (if required)
      selects nothing, a selected leaf that is not floating point or does not
      fit the layout, or a bound that does not fit or is invalid for a leaf.
  """
  leaves, treedef = flatten(params)
  selected = _selection(params, leaves, mask, caller=caller)
  if require_selection and not any(selected):
    raise ValueError(
        f"{caller} selects no parameter to constrain: "
        + ("with mask=None it takes every leaf of rank >= 2, and there is none."
           if mask is None else "the mask is False everywhere."))
  if bounds is not None:
    lows = per_leaf("min_value", bounds.min_value, params, leaves, selected, caller=caller)
    highs = per_leaf("max_value", bounds.max_value, params, leaves, selected, caller=caller)
  if isinstance(layout, PerLeafLayout):
    layouts = per_leaf(layout.name, layout.setting, params, leaves, selected, caller=caller,
                       is_value=_is_axes, none_is_default=True)
  specs: list[LeafSpec | None] = []
  for i, (leaf, chosen) in enumerate(zip(leaves, selected)):
    if not chosen:
      specs.append(None)
      continue
    dtype = jnp.result_type(leaf.value)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
          f"{caller}: leaf '{leaf.name}' has dtype {dtype}; constraints "
          "apply to floating-point weights only. Leave it out of the mask.")
    if layout is None:
      axes: tuple[int, ...] = ()
    elif isinstance(layout, PerLeafLayout):
      leaf_layout = _leaf_layout(layout, layouts[i], leaf, caller=caller)
      axes = reduction_axes(leaf, leaf_layout, caller=caller,
                            per_leaf_axis=leaf_layout.axis is not None)
    else:
      axes = reduction_axes(leaf, layout, caller=caller)
    leaf_bounds = None
    if bounds is not None:
      leaf_bounds = Bounds(lows[i], highs[i], bounds.rate)
      check_bounds(leaf_bounds, caller=caller, leaf=leaf.name)
    specs.append(LeafSpec(leaf.name, axes, leaf_bounds, tuple(np.shape(leaf.value))))
  # `flatten` skips None as jax.tree.flatten does, so the specs line up with treedef.
  return Resolved(treedef, tuple(specs))


def map_selected(resolved: Resolved, fn: Callable[..., tuple[Any, Any]], *trees: PyTree,
                 caller: str, unselected: Callable[..., Any] = lambda *leaves: leaves[-1]
                 ) -> tuple[PyTree, list[Any]]:
  """Applies ``fn(spec, *leaves) -> (new_leaf, aux)`` to every selected leaf.

  Args:
    resolved: from :func:`resolve` on the params.
    fn: the per-leaf function; it gets the leaf of each tree, in order.
    *trees: the params, then (for a transformation) the updates.
    caller: the constraint's name, for messages.
    unselected: what a leaf that is not selected becomes, from its leaves (by
      default that of the last tree: params stay, updates pass through).

  Returns:
    ``(tree, auxes)``: the new tree, and ``fn``'s second output per selected leaf.

  Raises:
    ValueError: if a tree does not have the structure of the params, or one of
      its selected leaves not the shape of the parameter.
  """
  columns = []
  for tree in trees:
    try:
      columns.append(resolved.treedef.flatten_up_to(tree))
    except (ValueError, TypeError) as e:
      raise ValueError(
          f"{caller}: updates and params must have the same structure.\n  updates:"
          f" {jax.tree.structure(tree)}\n  params:  {resolved.treedef}") from e
  out, auxes = [], []
  for spec, *leaves in zip(resolved.specs, *columns):
    if spec is None:
      out.append(unselected(*leaves))
      continue
    shapes = [np.shape(x) for x in leaves]
    if any(s != shapes[0] for s in shapes[1:]):
      raise ValueError(
          f"{caller}: the update for leaf '{spec.path}' has shape {shapes[-1]}, but the "
          f"parameter has shape {shapes[0]}. Updates must have the shapes of the params.")
    new, aux = fn(spec, *(jnp.asarray(x) for x in leaves))
    out.append(new)
    auxes.append(aux)
  return jax.tree_util.tree_unflatten(resolved.treedef, out), auxes
