"""maxnorm_jax/_tree.py: resolving the selected leaves, and mapping over them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maxnorm_jax as mnj
from maxnorm_jax import _tree


def test_map_applies_fn_to_selected_leaves_only_and_keeps_the_rest(small_params):
  resolved = _tree.resolve(small_params, mask=None, caller="test", layout=_tree.Layout())
  assert [s.path if s else None for s in resolved.specs] == ["Conv_0/kernel", None,
                                                             "Dense_0/kernel"]
  assert [s.axes for s in resolved.specs if s] == [(0, 1, 2), (0,)]
  updates = jax.tree.map(lambda x: x + 1, small_params)
  out, auxes = _tree.map_selected(resolved, lambda spec, p, u: (p - u, spec.path),
                                  small_params, updates, caller="test")
  assert auxes == ["Conv_0/kernel", "Dense_0/kernel"]
  assert out["Dense_0"]["bias"] is updates["Dense_0"]["bias"]
  np.testing.assert_array_equal(np.asarray(out["Dense_0"]["kernel"]), -1.0)
  out, _ = _tree.map_selected(resolved, lambda spec, p: (p, None), small_params,
                              caller="test", unselected=lambda p: None)
  assert out["Dense_0"]["bias"] is None


def test_integer_leaf_selected_names_the_leaf():
  params = {"w": jnp.ones((3, 3), jnp.int32)}
  for tx in (mnj.max_norm(3.0), mnj.non_neg()):
    with pytest.raises(ValueError, match="leaf 'w' has dtype int32"):
      tx.init(params)
  with pytest.raises(ValueError, match="leaf 'w' has dtype int32"):
    mnj.neuron_norms(params)


def test_mask_that_selects_nothing(trace):
  with pytest.raises(ValueError, match="selects no parameter"):
    trace(mnj.max_norm(3.0, mask=lambda p: jax.tree.map(lambda _: False, p)))
  with pytest.raises(ValueError, match="every leaf of rank >= 2, and there is none"):
    trace(mnj.max_norm(3.0), {"bias": jnp.ones(3)})


def test_updates_with_another_structure(small_params):
  tx = mnj.max_norm(3.0)
  with pytest.raises(ValueError, match="updates and params must have the same structure"):
    tx.update({"x": jnp.ones((4, 3))}, tx.init(small_params), small_params)


@pytest.mark.parametrize("shape", [(2, 3), (1, 3), (4, 1), (3, 4), (12,)])
def test_updates_of_another_shape_name_the_leaf_and_both_shapes(small_params, shape):
  """Broadcastable shapes too: (1, 3) + (4, 3) would silently broadcast."""
  updates = dict(small_params, Dense_0={"kernel": jnp.ones(shape), "bias": jnp.ones(3)})
  shown = str(shape).replace("(", r"\(").replace(")", r"\)")
  for name, tx in (("max_norm", mnj.max_norm(3.0)), ("unit_norm", mnj.unit_norm()),
                   ("non_neg", mnj.non_neg())):
    with pytest.raises(ValueError, match=rf"{name}: the update for leaf 'Dense_0/kernel' "
                       rf"has shape {shown}, but the parameter has shape \(4, 3\)"):
      jax.jit(tx.update)(updates, tx.init(small_params), small_params)
