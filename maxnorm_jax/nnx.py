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
import optax

try:
  from flax import nnx
except ModuleNotFoundError as error:
  raise ModuleNotFoundError(
      "maxnorm_jax.nnx needs Flax NNX (flax>=0.12.1), which is not installed; "
      "install it with: pip install 'maxnorm-jax[nnx]'", name=error.name) from error

from maxnorm_jax import _constraints
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
  Neurons are on the last axis, NNX's layout for ``Linear`` and ``Conv``. The
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
  parts = []
  if non_negs:
    parts.append(_constraints.non_neg(mask=_paths_in(non_negs)))
  if max_norms:
    parts.append(_constraints.max_norm(_lookup(max_norms), mask=_paths_in(set(max_norms))))
  for rate, bounds in min_max_norms.items():
    parts.append(_constraints.min_max_norm(
        _lookup({k: lo for k, (lo, _) in bounds.items()}),
        _lookup({k: hi for k, (_, hi) in bounds.items()}), rate, mask=_paths_in(set(bounds))))
  if unit_norms:
    parts.append(_constraints.unit_norm(mask=_paths_in(unit_norms)))
  if not parts:
    raise ValueError(
        f"{owner}: no {getattr(wrt, '__name__', wrt)} of the model declares a constraint. "
        "Declare one in its metadata, e.g. nnx.Linear(..., kernel_metadata={'max_norm': "
        f"3.0}}); the keys are {', '.join(KEYS)}.")
  return parts[0] if len(parts) == 1 else optax.chain(*parts)
