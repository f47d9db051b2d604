"""Constraints declared on Flax NNX parameters, the way Keras declares them on layers.

Keras writes ``Dense(1024, kernel_constraint=max_norm(3.))``. In Flax NNX, a
parameter carries metadata, so the constraint can be declared where the layer
is built::

    self.dense1 = nnx.Linear(86528, 1024, kernel_metadata={"max_norm": 3.0}, rngs=rngs)
    # or kernel_init=nnx.with_metadata(nnx.initializers.lecun_normal(), max_norm=3.0)

and the optax transformation read off the model::

    tx = optax.chain(optax.adam(1e-4), mnj.nnx.constraints_from(model))

This module imports Flax; ``import maxnorm_jax`` does not (``mnj.nnx`` loads
it on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

try:
  from flax import nnx
except ModuleNotFoundError as error:
  raise ModuleNotFoundError(
      "maxnorm_jax.nnx needs Flax NNX (flax>=0.12.1), which is not installed; "
      "install it with: pip install 'maxnorm-jax[nnx]'", name=error.name) from error

from maxnorm_jax import _constraints, _tree
from maxnorm_jax._tree import PyTree, path_to_str

#: The metadata keys read by :func:`constraints_from`, and what each takes.
KEYS = {
    "max_norm": "the bound c, a number",
    "min_max_norm": "(min_value, max_value) or (min_value, max_value, rate)",
    "unit_norm": "True",
    "non_neg": "True",
}


def _paths_in(paths: set[str]) -> Callable[[PyTree], PyTree]:
  """A mask that selects the leaves whose path is in ``paths``."""
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: path_to_str(path) in paths, params)


def _lookup(values: dict[str, Any]) -> Callable[[str, Any], Any]:
  """A per-leaf bound read from ``values`` by path."""
  return lambda path, leaf: values[path]


def constraints_from(model: Any, wrt: Any = nnx.Param) -> optax.GradientTransformation:
  """The constraints declared in the metadata of a model's parameters, as one transformation.

  Each ``wrt`` variable of ``model`` may declare, in its metadata, one norm
  constraint and ``non_neg``:

  * ``max_norm=c``: :func:`maxnorm_jax.max_norm` with bound ``c`` for it;
  * ``min_max_norm=(min_value, max_value)`` or ``(min_value, max_value,
    rate)``: :func:`maxnorm_jax.min_max_norm`;
  * ``unit_norm=True``: :func:`maxnorm_jax.unit_norm`;
  * ``non_neg=True``: :func:`maxnorm_jax.non_neg`.

  Bounds may differ from one parameter to the next: all ``max_norm``
  declarations become one :func:`maxnorm_jax.max_norm` with a per-leaf bound.
  Neurons are read from the declaring layer as in :func:`max_norm` (so a layer
  later stacked by ``nnx.vmap`` or ``nnx.scan`` is bounded per layer), and
  are on the last axis for a layer without a known layout. The
  transformation selects leaves by path, so it works on what ``nnx.Optimizer``
  passes it and on ``nnx.split`` / ``nnx.to_pure_dict`` states alike. When a
  model declares one kind of constraint, the result is that transformation
  (its state is a :class:`maxnorm_jax.NormConstraintState`); otherwise an
  ``optax.chain`` with ``non_neg`` first, then the norm constraints. Put it
  last in the chain.

  Args:
    model: an NNX module (or any graph node ``nnx.state`` accepts).
    wrt: the variables to read, as for ``nnx.Optimizer``; ``nnx.Param`` by
      default.

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: if no variable declares a constraint, or one declares two norm
      constraints, or a declaration is malformed.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import maxnorm_jax as mnj
    >>> class MLP(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.hidden = nnx.Linear(4, 8, kernel_metadata={"max_norm": 0.5}, rngs=rngs)
    ...     self.out = nnx.Linear(8, 2, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.out(jax.nn.relu(self.hidden(x)))
    >>> model = MLP(nnx.Rngs(0))
    >>> tx = optax.chain(optax.sgd(1.0), mnj.nnx.constraints_from(model))
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    >>> grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 4))) ** 2))(model)
    >>> _ = optimizer.update(model, grads)
    >>> print(f"{mnj.neuron_norms({'k': model.hidden.kernel[...]})['k'].max():.4f}")
    0.5000
  """
  owner = "constraints_from"
  state = nnx.state(model, wrt)
  variables = jax.tree_util.tree_flatten_with_path(
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  max_norms: dict[str, Any] = {}
  min_max_norms: dict[Any, dict[str, tuple[Any, Any]]] = {}  # by rate
  unit_norms: set[str] = set()
  non_negs: set[str] = set()
  for path, variable in variables:
    if not isinstance(variable, nnx.Variable):
      continue
    name = path_to_str(path)
    declared = {k: v for k, v in variable.get_metadata().items() if k in KEYS}
    norm_keys = [k for k in declared if k != "non_neg"]
    if len(norm_keys) > 1:
      raise ValueError(
          f"{owner}: '{name}' declares {' and '.join(norm_keys)}; a parameter takes at "
          "most one norm constraint.")
    for key, value in declared.items():
      if key == "max_norm":
        max_norms[name] = value
      elif key == "min_max_norm":
        if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
          raise ValueError(
              f"{owner}: '{name}' declares min_max_norm={value!r}; give {KEYS[key]}.")
        rate = value[2] if len(value) == 3 else 1.0
        min_max_norms.setdefault(rate, {})[name] = (value[0], value[1])
      elif value is True:
        (unit_norms if key == "unit_norm" else non_negs).add(name)
      elif value is not False:
        raise ValueError(f"{owner}: '{name}' declares {key}={value!r}; give {KEYS[key]}.")
  neuron_axis = _declared_layouts(model, state)
  parts = []
  if non_negs:
    parts.append(_constraints.non_neg(mask=_paths_in(non_negs)))
  if max_norms:
    parts.append(_constraints.max_norm(_lookup(max_norms), neuron_axis=neuron_axis,
                                       mask=_paths_in(set(max_norms))))
  for rate, bounds in min_max_norms.items():
    parts.append(_constraints.min_max_norm(
        _lookup({k: lo for k, (lo, _) in bounds.items()}),
        _lookup({k: hi for k, (_, hi) in bounds.items()}), rate, neuron_axis=neuron_axis,
        mask=_paths_in(set(bounds))))
  if unit_norms:
    parts.append(_constraints.unit_norm(neuron_axis=neuron_axis, mask=_paths_in(unit_norms)))
  if not parts:
    raise ValueError(
        f"{owner}: no {getattr(wrt, '__name__', wrt)} of the model declares a constraint. "
        "Declare one in its metadata, e.g. nnx.Linear(..., kernel_metadata={'max_norm': "
        f"3.0}}); the keys are {', '.join(KEYS)}.")
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


# ------------------------------------------------------------- layouts from modules

#: The NNX layers whose kernels :func:`max_norm` constrains by default (their layouts are known).
KERNEL_LAYERS = ("Linear", "LinearGeneral", "Einsum", "Conv", "ConvTranspose")


def _own_layout(module: Any, field: str) -> _tree.OwnLayout:
  """``(shape, neuron axes)`` of ``module.<field>`` as the layer makes it, unstacked.

  None when the layer has no known layout for that field; a str says why an
  ``nnx.Einsum`` is refused.
  """
  if isinstance(module, nnx.Embed) and field == "embedding":
    return (module.num_embeddings, module.features), (0,)  # one neuron per row
  if field != "kernel":
    return None
  if isinstance(module, nnx.LinearGeneral):
    shape = (*module.batch_axis.values(), *module.in_features, *module.out_features)
    batch, ins = len(module.batch_axis), len(module.in_features)
    return shape, tuple(range(batch)) + tuple(range(batch + ins, len(shape)))
  if isinstance(module, nnx.Linear):
    return (module.in_features, module.out_features), (1,)
  if isinstance(module, nnx.Einsum):
    neurons = _tree.einsum_neurons(module.einsum_str, len(module.kernel_shape))
    return neurons if isinstance(neurons, str) else (tuple(module.kernel_shape), neurons)
  if isinstance(module, nnx.ConvTranspose):
    rank = len(module.kernel_shape)  # (*window, in, out), or (*window, out, in) transposed
    return tuple(module.kernel_shape), (rank - 2,) if module.transpose_kernel else (rank - 1,)
  if isinstance(module, nnx.Conv):
    rank = len(module.kernel_shape)  # (*window, in // groups, out)
    return tuple(module.kernel_shape), (rank - 1,)
  return None


def _reader(model: Any) -> _tree.ModuleLayouts:
  """Each Param's module, read from the graph of ``model``, and the layouts of NNX layers."""
  nodes = dict(nnx.graph.iter_graph(model))
  owners = {}
  for path, node in nodes.items():
    if isinstance(node, nnx.Param) and path:
      owners["/".join(str(k) for k in path)] = (nodes.get(tuple(path[:-1])), str(path[-1]))
  kernel_layers = tuple(getattr(nnx, c) for c in KERNEL_LAYERS)
  return _tree.ModuleLayouts(
      owner=lambda name: owners.get(name, (None, "")),
      own_layout=_own_layout,
      is_kernel=lambda module, field: field == "kernel" and isinstance(module, kernel_layers),
      known=f"nnx.{', nnx.'.join(KERNEL_LAYERS)} kernels and nnx.Embed rows",
      stack_hint="nnx.vmap or nnx.scan with out_axes=0")


def _declared_layouts(model: Any, state: Any) -> Callable[[str, Any], Any]:
  """Per-leaf neuron axes for :func:`constraints_from`: the owner's, or None (the default)."""
  reader = _reader(model)
  layouts: dict[str, tuple[int, ...] | None] = {}
  for leaf in _tree.flatten(state)[0]:
    module, field = reader.owner(leaf.name)
    own = _own_layout(module, field)
    shape = tuple(np.shape(leaf.value))
    if (own is not None and not isinstance(own, str) and len(shape) >= len(own[0])
        and shape[len(shape) - len(own[0]):] == tuple(own[0])):
      layouts[leaf.name] = _tree.stacked_neuron_axes(leaf.name, shape, module, field, reader,
                                                     caller="constraints_from")
  return lambda path, leaf: layouts.get(path)


def _layouts(model: Any, mask: Any, caller: str) -> tuple[Any, Any]:
  return _tree.module_layouts(nnx.state(model, nnx.Param), _reader(model), mask,
                              caller=caller)


def max_norm(model: Any, max_value: Any = 3.0, *, mask: Any = None
             ) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.max_norm` for ``nnx.state(model, nnx.Param)``, neurons read off the layers.

  Each selected Param's neurons are those of the module that owns it, so no
  ``axis`` is given: ``nnx.Linear``, ``nnx.Conv`` and ``nnx.ConvTranspose``
  kernels by output feature; ``nnx.LinearGeneral`` kernels reduced over its
  input axes (``axis``/``in_features``), so the query, key and value kernels
  ``(in, heads, head_dim)`` of ``nnx.MultiHeadAttention`` have one neuron per
  head and dimension and its output kernel ``(heads, head_dim, out)`` one per
  output; ``nnx.Einsum`` kernels reduced over the kernel axes its equation
  does not carry to the output; ``nnx.Embed`` tables by row (one embedding
  vector). A layer stacked by ``nnx.vmap`` or ``nnx.scan`` holds leading
  axes beyond the layer's own rank: they index layers and are never reduced
  over; a Param whose shape does not end in the one its layer makes is
  refused. The layouts are read when this is called, from ``model``.

  Args:
    model: an NNX module; the transformation is for ``nnx.state(model,
      nnx.Param)`` (what ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes).
    max_value: the bound, as for :func:`maxnorm_jax.max_norm` (a number, a
      pytree prefix of the state, or a callable ``(path, leaf) -> number``).
    mask: the Params to constrain: by default the kernels of ``Linear``,
      ``LinearGeneral`` (attention projections included), ``Einsum``,
      ``Conv`` and ``ConvTranspose``; embeddings are opt-in, as in Keras and
      PyTorch, since a bound on the rows of a table is a modelling choice. Else
      a pytree of bools (a prefix of the state), or a callable such as
      :func:`maxnorm_jax.paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: if the mask selects a Param whose module has no known layout
      (the message names the leaf and the class), or selects nothing, or as
      :func:`maxnorm_jax.max_norm`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import maxnorm_jax as mnj
    >>> attention = nnx.MultiHeadAttention(num_heads=4, in_features=32, qkv_features=64,
    ...                                    decode=False, rngs=nnx.Rngs(0))
    >>> tx = optax.chain(optax.sgd(1.0), mnj.nnx.max_norm(attention, 1.0))
    >>> print(mnj.describe(tx, nnx.state(attention, nnx.Param)))
    transformation  path                shape  neuron axes  reduced axes  neurons  bound
    max_norm        key/kernel    (32, 4, 16)  1, 2         0                  64  1
    max_norm        out/kernel    (4, 16, 32)  2            0, 1               32  1
    max_norm        query/kernel  (32, 4, 16)  1, 2         0                  64  1
    max_norm        value/kernel  (32, 4, 16)  1, 2         0                  64  1
  """
  neuron_axis, selected = _layouts(model, mask, "mnj.nnx.max_norm")
  return _constraints.max_norm(max_value, neuron_axis=neuron_axis, mask=selected)


def min_max_norm(model: Any, min_value: Any = 0.0, max_value: Any = 1.0, rate: Any = 1.0, *,
                 mask: Any = None) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.min_max_norm` for an NNX model, neurons read as by :func:`max_norm`.

  Args:
    model: an NNX module, as for :func:`max_norm`.
    min_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    max_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    rate: as for :func:`maxnorm_jax.min_max_norm`.
    mask: the Params to constrain, as for :func:`max_norm` (kernels by default).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.
  """
  neuron_axis, selected = _layouts(model, mask, "mnj.nnx.min_max_norm")
  return _constraints.min_max_norm(min_value, max_value, rate, neuron_axis=neuron_axis,
                                   mask=selected)


def unit_norm(model: Any, *, mask: Any = None) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.unit_norm` for an NNX model, neurons read as by :func:`max_norm`.

  Every selected neuron is rescaled to norm 1 after each step: with
  ``mask=mnj.paths_matching("kernel$", "embedding$")``, each embedding vector
  and each neuron of every kernel, as nGPT normalises its weights.

  Args:
    model: an NNX module, as for :func:`max_norm`.
    mask: the Params to constrain, as for :func:`max_norm` (kernels by default;
      embeddings are opt-in, by rows).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import maxnorm_jax as mnj
    >>> class Model(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.embed = nnx.Embed(10, 4, rngs=rngs)
    ...     self.dense = nnx.Linear(4, 6, rngs=rngs)
    >>> model = Model(nnx.Rngs(0))
    >>> rows_and_neurons = mnj.paths_matching("kernel$", "embedding$")
    >>> tx = optax.chain(optax.adam(1e-3), mnj.nnx.unit_norm(model, mask=rows_and_neurons))
    >>> print(mnj.describe(tx, nnx.state(model, nnx.Param)))
    transformation  path             shape  neuron axes  reduced axes  neurons  bound
    unit_norm       dense/kernel      (4, 6)  1            0                   6  = 1
    unit_norm       embed/embedding  (10, 4)  0            1                  10  = 1
  """
  neuron_axis, selected = _layouts(model, mask, "mnj.nnx.unit_norm")
  return _constraints.unit_norm(neuron_axis=neuron_axis, mask=selected)
