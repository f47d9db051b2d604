"""Layouts of Haiku params, read from the modules that make them.

Haiku's params are dicts keyed by module name, without classes, so
:func:`maxnorm_jax.max_norm` sees an ``hk.Embed`` table or an
``hk.Conv2DTranspose`` kernel ``(kh, kw, out, in)`` as any other array. The
modules know better: this module runs the transformed function's ``init`` once
under ``jax.eval_shape`` (nothing is allocated or computed) with
``hk.intercept_methods``, notes the module that makes each param, and reads
its neurons from it, as :mod:`maxnorm_jax.nnx` does for Flax NNX::

    net = hk.transform(forward)
    tx = optax.chain(optax.adam(1e-3), mnj.haiku.max_norm(net, (tokens,), 1.0))

This module imports Haiku; ``import maxnorm_jax`` does not (``mnj.haiku``
loads it on first use).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

try:
  import haiku as hk
except ModuleNotFoundError as error:
  raise ModuleNotFoundError(
      "maxnorm_jax.haiku needs Haiku (dm-haiku), which is not installed; install it with: "
      "pip install dm-haiku", name=error.name) from error

from maxnorm_jax import _constraints, _tree

#: The Haiku layers whose weights the functions here constrain by default.
KERNEL_LAYERS = ("Linear", "ConvND", "ConvNDTranspose")


def _own_layout(module: Any, field: str, shape: tuple[int, ...]) -> _tree.OwnLayout:
  """``(shape, neuron axes)`` of a param of ``module`` as the layer makes it, unstacked."""
  rank = len(shape)
  if isinstance(module, hk.Embed) and field == "embeddings":
    return shape, (0,)  # one neuron per row
  if field != "w":
    return None
  if isinstance(module, (hk.Linear, hk.ConvND)):  # (in, out), (*window, in // groups, out)
    return shape, (rank - 1,)
  if isinstance(module, hk.ConvNDTranspose):  # (*window, out, in)
    return shape, (rank - 2,)
  return None


def _reader(transformed: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[Any, _tree.ModuleLayouts]:
  """The params of ``transformed.init(key, *args, **kwargs)`` (as shapes) and their modules."""
  # One dict per lifted init being run (hk.layer_stack, hk.lift): inside it, modules are
  # named relative to the lifted function; the lifting module's own params give their
  # names, and their stacked shapes, in the outer params.
  scopes: list[dict[str, tuple[Any, str, _tree.OwnLayout]]] = [{}]

  def note(next_fun: Any, call_args: Any, call_kwargs: Any, context: Any) -> Any:
    module = context.module
    if context.method_name in ("__init__", "params_dict", "state_dict") or not (
        hk.running_init()):  # (a stack's layers also run, named as inside it, after init)
      return next_fun(*call_args, **call_kwargs)
    lifting = type(module).__name__ == "LiftingModule"
    if lifting:
      scopes.append({})
    try:
      out = next_fun(*call_args, **call_kwargs)
    finally:
      inner = scopes.pop() if lifting else {}
    if lifting:
      outer = list(module.params_dict())
      for name, record in inner.items():
        matches = [o for o in outer if o.endswith(f"/{name}")]
        if len(matches) == 1:
          scopes[-1].setdefault(matches[0], record)
    else:
      prefix = f"{module.module_name}/"
      for name, value in module.params_dict().items():
        field = name[len(prefix):]
        if name.startswith(prefix) and "/" not in field:  # its own, not a submodule's
          scopes[-1].setdefault(name, (module, field, _own_layout(module, field, value.shape)))
    return out

  key = jax.random.key(0)
  with hk.intercept_methods(note):
    made = jax.eval_shape(lambda: transformed.init(key, *args, **kwargs))
  params = made[0] if isinstance(made, tuple) else made  # transform_with_state: (params, state)
  owners = scopes[0]
  layouts = {(id(module), field): own for module, field, own in owners.values()}
  kernel_layers = tuple(getattr(hk, c) for c in KERNEL_LAYERS)
  return params, _tree.ModuleLayouts(
      owner=lambda name: owners.get(name, (None, "", None))[:2],
      own_layout=lambda module, field: layouts.get((id(module), field)),
      is_kernel=lambda module, field: field == "w" and isinstance(module, kernel_layers),
      known="hk.Linear, hk.ConvND (Conv1D, Conv2D, Conv3D) and hk.ConvNDTranspose weights "
            "and hk.Embed rows",
      stack_hint="hk.layer_stack")


def _layouts(transformed: Any, args: Any, kwargs: Any, mask: Any, caller: str
             ) -> tuple[Any, Any]:
  if not callable(getattr(transformed, "init", None)):
    raise TypeError(
        f"{caller}: pass the hk.transform(...) (or hk.transform_with_state) of the "
        f"network, got {type(transformed).__name__}.")
  args = args if isinstance(args, tuple) else (args,)
  params, reader = _reader(transformed, args, dict(kwargs or {}))
  return _tree.module_layouts(params, reader, mask, caller=caller)


def max_norm(transformed: Any, args: Any, max_value: Any = 3.0, *,
             kwargs: dict[str, Any] | None = None, mask: Any = None
             ) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.max_norm` for the params of a Haiku network, neurons read off the layers.

  ``transformed.init(key, *args, **kwargs)`` runs once, under
  ``jax.eval_shape`` (nothing is allocated), to note the module that makes
  each param. ``hk.Linear`` weights ``(in, out)`` and ``hk.Conv1D``/``2D``/``3D``
  weights ``(*window, in, out)`` have one neuron per output (the last axis),
  so ``hk.MultiHeadAttention``'s query, key, value and output projections,
  which are ``hk.Linear``s, one per head and dimension; ``hk.Conv1DTranspose``
  /``2D``/``3D`` weights ``(*window, out, in)`` one per output on axis -2;
  ``hk.Embed`` tables one per row. A layer inside ``hk.layer_stack`` has a
  leading layer axis, never reduced over.

  Args:
    transformed: the ``hk.transform`` (or ``hk.transform_with_state``) of the
      network.
    args: the arguments of ``transformed.init`` after the PRNG key: a tuple,
      or one array. Only their shapes and dtypes matter.
    max_value: the bound, as for :func:`maxnorm_jax.max_norm` (a number, a
      pytree prefix of the params, or a callable ``(path, leaf) -> number``).
    kwargs: keyword arguments of ``transformed.init``, if any.
    mask: the params to constrain: by default the weights of ``hk.Linear``,
      the convolutions and the transposed convolutions; embeddings are
      opt-in. Else a pytree of bools (a prefix of the params), or a callable
      such as :func:`maxnorm_jax.paths_matching`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: if the mask selects a param whose module has no known layout
      (the message names the leaf and the class), or selects nothing, or as
      :func:`maxnorm_jax.max_norm`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import haiku as hk
    >>> import maxnorm_jax as mnj
    >>> net = hk.transform(lambda x: hk.Conv2DTranspose(8, 3, name="up")(x))
    >>> x = jnp.ones((1, 4, 4, 3))
    >>> tx = optax.chain(optax.adam(1e-3), mnj.haiku.max_norm(net, x, 1.0))
    >>> print(mnj.describe(tx, net.init(jax.random.key(0), x)))
    transformation  path           shape  neuron axes  reduced axes  neurons  bound
    max_norm        up/w    (3, 3, 8, 3)  2            0, 1, 3            8  1
  """
  neuron_axis, selected = _layouts(transformed, args, kwargs, mask, "mnj.haiku.max_norm")
  return _constraints.max_norm(max_value, neuron_axis=neuron_axis, mask=selected)


def min_max_norm(transformed: Any, args: Any, min_value: Any = 0.0, max_value: Any = 1.0,
                 rate: Any = 1.0, *, kwargs: dict[str, Any] | None = None, mask: Any = None
                 ) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.min_max_norm` for a Haiku network, neurons read as by :func:`max_norm`.

  Args:
    transformed: the transformed network, as for :func:`max_norm`.
    args: the arguments of ``transformed.init``, as for :func:`max_norm`.
    min_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    max_value: as for :func:`maxnorm_jax.min_max_norm` (per leaf too).
    rate: as for :func:`maxnorm_jax.min_max_norm`.
    kwargs: keyword arguments of ``transformed.init``, if any.
    mask: the params to constrain, as for :func:`max_norm` (weights by default).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.
  """
  neuron_axis, selected = _layouts(transformed, args, kwargs, mask, "mnj.haiku.min_max_norm")
  return _constraints.min_max_norm(min_value, max_value, rate, neuron_axis=neuron_axis,
                                   mask=selected)


def unit_norm(transformed: Any, args: Any, *, kwargs: dict[str, Any] | None = None,
              mask: Any = None) -> optax.GradientTransformation:
  """:func:`maxnorm_jax.unit_norm` for a Haiku network, neurons read as by :func:`max_norm`.

  Args:
    transformed: the transformed network, as for :func:`max_norm`.
    args: the arguments of ``transformed.init``, as for :func:`max_norm`.
    kwargs: keyword arguments of ``transformed.init``, if any.
    mask: the params to constrain, as for :func:`max_norm` (weights by default;
      embeddings are opt-in, by rows).

  Returns:
    An ``optax.GradientTransformation`` whose state is a
    :class:`maxnorm_jax.NormConstraintState`; put it last in the chain.

  Raises:
    ValueError: as :func:`max_norm`.
  """
  neuron_axis, selected = _layouts(transformed, args, kwargs, mask, "mnj.haiku.unit_norm")
  return _constraints.unit_norm(neuron_axis=neuron_axis, mask=selected)
