"""Layouts of Flax Linen params, read from the modules that make them.

Linen's params are dicts that keep no classes, so :func:`maxnorm_jax.max_norm`
sees a ``(vocab, features)`` table or a ``(layers, in, heads, head_dim)``
stacked attention kernel as any other array. The modules know better: this
module runs ``module.init`` once under ``jax.eval_shape`` (nothing is
allocated or computed) with ``nn.intercept_methods``, notes the module that
makes each param, and reads its neurons from it, as :mod:`maxnorm_jax.nnx`
does for Flax NNX::

    tx = optax.chain(optax.adam(1e-3), mnj.linen.max_norm(model, (tokens,), 1.0))

This module imports Flax; ``import maxnorm_jax`` does not (``mnj.linen``
loads it on first use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

try:
  from flax import linen as nn
except ModuleNotFoundError as error:
  raise ModuleNotFoundError(
      "maxnorm_jax.linen needs Flax (flax>=0.12.1), which is not installed; "
      "install it with: pip install 'maxnorm-jax[nnx]'", name=error.name) from error

from maxnorm_jax import _constraints, _tree

#: The Linen layers whose kernels the functions here constrain by default.
KERNEL_LAYERS = ("Dense", "DenseGeneral", "Einsum", "Conv", "ConvTranspose")


def _own_layout(module: Any, field: str, shape: tuple[int, ...]) -> _tree.OwnLayout:
  """``(shape, neuron axes)`` of a param of ``module`` as the layer makes it, unstacked."""
  rank = len(shape)
  if isinstance(module, nn.Embed) and field == "embedding":
    return shape, (0,)  # one neuron per row
  if field != "kernel":
    return None
  if isinstance(module, nn.DenseGeneral):  # (*batch_dims, *inputs, *features)
    batch = len(module.batch_dims) if isinstance(module.batch_dims, Sequence) else 1
    features = len(module.features) if isinstance(module.features, Sequence) else 1
    return shape, tuple(range(batch)) + tuple(range(rank - features, rank))
  if isinstance(module, (nn.Dense, nn.Conv)):  # (in, out), (*window, in // groups, out)
    return shape, (rank - 1,)
  if isinstance(module, nn.ConvTranspose):  # (*window, in, out), or (..., out, in) transposed
    return shape, (rank - 2,) if module.transpose_kernel else (rank - 1,)
  if isinstance(module, nn.Einsum):
    neurons = _tree.einsum_neurons(str(module.einsum_str), rank)
    return neurons if isinstance(neurons, str) else (shape, neurons)
  return None


def _reader(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[Any, _tree.ModuleLayouts]:
  """The params of ``module.init(key, *args, **kwargs)`` (as shapes) and their modules."""
  owners: dict[str, tuple[Any, str]] = {}  # path -> (layer, field)
  layouts: dict[tuple[int, str], _tree.OwnLayout] = {}  # (id(layer), field) -> its own layout

  def note(next_fun: Any, call_args: Any, call_kwargs: Any, context: Any) -> Any:
    out = next_fun(*call_args, **call_kwargs)
    layer = context.module
    if layer.scope is not None:
      for field, value in nn.unbox(layer.variables.get("params", {})).items():
        if hasattr(value, "shape"):  # a param, not a submodule's dict
          owners["/".join((*map(str, layer.path), field))] = (layer, field)
          layouts[id(layer), field] = _own_layout(layer, field, tuple(value.shape))
    return out

  key = jax.random.key(0)
  with nn.intercept_methods(note):
    variables = jax.eval_shape(
        lambda: module.init({"params": key, "dropout": key}, *args, **kwargs))
  if "params" not in variables:
    raise ValueError("mnj.linen: the module's init makes no params.")
  kernel_layers = tuple(getattr(nn, c) for c in KERNEL_LAYERS)
  return variables["params"], _tree.ModuleLayouts(
      owner=lambda name: owners.get(name, (None, "")),
      own_layout=lambda layer, field: layouts.get((id(layer), field)),
      is_kernel=lambda layer, field: field == "kernel" and isinstance(layer, kernel_layers),
      known=f"nn.{', nn.'.join(KERNEL_LAYERS)} kernels and nn.Embed rows",
      stack_hint="nn.scan or nn.vmap with variable_axes={'params': 0}")


def _layouts(module: nn.Module, args: Any, kwargs: Any, mask: Any, caller: str
             ) -> tuple[Any, Any]:
  if not isinstance(module, nn.Module):
    raise TypeError(f"{caller}: module must be a flax.linen Module, got {type(module).__name__}.")
  args = args if isinstance(args, tuple) else (args,)
  params, reader = _reader(module, args, dict(kwargs or {}))
  return _tree.module_layouts(params, reader, mask, caller=caller)


def max_norm(module: nn.Module, args: Any, max_value: Any = 3.0, *,
             kwargs: dict[str, Any] | None = None, mask: Any = None
             ) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.max_norm` for the params of a Linen module, neurons read off the layers.

  ``module.init(key, *args, **kwargs)`` runs once, under ``jax.eval_shape``
  (nothing is allocated), to note the module that makes each param. Its
  neurons are then those of :func:`maxnorm_jax.nnx.max_norm`: ``nn.Dense``,
  ``nn.Conv`` and ``nn.ConvTranspose`` kernels by output feature (axis -2 for
  ``transpose_kernel=True``); ``nn.DenseGeneral`` kernels reduced over their
  input axes, so the query, key and value kernels ``(in, heads, head_dim)`` of
  ``nn.MultiHeadDotProductAttention`` have one neuron per head and dimension
  and its output kernel ``(heads, head_dim, out)`` one per output;
  ``nn.Einsum`` kernels reduced over the axes its equation does not carry to
  the output; ``nn.Embed`` tables by row. A layer stacked by ``nn.scan`` or
  ``nn.vmap`` has leading axes beyond the shape it makes: they index layers
  and are never reduced over. The transformation is for the ``"params"``
  collection of the variables that ``init`` returns.

  Args:
    module: a Linen module.
    args: the positional arguments of ``module.init`` after the PRNG key: a
      tuple, or one array. Only their shapes and dtypes matter.
    max_value: the bound, as for :func:`maxnorm_jax.max_norm` (a number, a
      pytree prefix of the params, or a callable ``(path, leaf) -> number``).
    kwargs: keyword arguments of ``module.init``, if any.
    mask: the params to constrain: by default the kernels of ``Dense``,
      ``DenseGeneral`` (attention projections included), ``Einsum``, ``Conv``
      and ``ConvTranspose``; embeddings are opt-in. Else a pytree of bools (a
      prefix of the params), or a callable such as
      :func:`maxnorm_jax.paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: if the mask selects a param whose module has no known layout
      (the message names the leaf and the class), or a stacked param whose
      layer axes do not lead, or selects nothing, or as
      :func:`maxnorm_jax.max_norm`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import flax.linen as nn
    >>> import maxnorm_jax as mnj
    >>> attention = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=64)
    >>> x = jnp.ones((1, 8, 32))
    >>> tx = optax.chain(optax.adam(1e-3), mnj.linen.max_norm(attention, x, 1.0))
    >>> params = attention.init(jax.random.key(0), x)["params"]
    >>> print(mnj.describe(tx, params))
    transformation  path                shape  neuron axes  reduced axes  neurons  bound
    max_norm        key/kernel    (32, 4, 16)  1, 2         0                  64  1
    max_norm        out/kernel    (4, 16, 32)  2            0, 1               32  1
    max_norm        query/kernel  (32, 4, 16)  1, 2         0                  64  1
    max_norm        value/kernel  (32, 4, 16)  1, 2         0                  64  1
  """
  neuron_axis, selected = _layouts(module, args, kwargs, mask, "mnj.linen.max_norm")
  return _constraints.max_norm(max_value, neuron_axis=neuron_axis, mask=selected)


def min_max_norm(module: nn.Module, args: Any, min_value: Any = 0.0, max_value: Any = 1.0,
                 rate: Any = 1.0, *, kwargs: dict[str, Any] | None = None, mask: Any = None
                 ) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.min_max_norm` for a Linen module, neurons read as by :func:`max_norm`.

  Args:
    module: a Linen module, as for :func:`max_norm`.
    args: the positional arguments of ``module.init``, as for :func:`max_norm`.
    min_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    max_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    rate: as for :func:`maxnorm_jax.min_max_norm`.
    kwargs: keyword arguments of ``module.init``, if any.
    mask: the params to constrain, as for :func:`max_norm` (kernels by default).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.
  """
  neuron_axis, selected = _layouts(module, args, kwargs, mask, "mnj.linen.min_max_norm")
  return _constraints.min_max_norm(min_value, max_value, rate, neuron_axis=neuron_axis,
                                   mask=selected)


def unit_norm(module: nn.Module, args: Any, *, kwargs: dict[str, Any] | None = None,
              mask: Any = None) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.unit_norm` for a Linen module, neurons read as by :func:`max_norm`.

  Args:
    module: a Linen module, as for :func:`max_norm`.
    args: the positional arguments of ``module.init``, as for :func:`max_norm`.
    kwargs: keyword arguments of ``module.init``, if any.
    mask: the params to constrain, as for :func:`max_norm` (kernels by default;
      embeddings are opt-in, by rows).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.
  """
  neuron_axis, selected = _layouts(module, args, kwargs, mask, "mnj.linen.unit_norm")
  return _constraints.unit_norm(neuron_axis=neuron_axis, mask=selected)
