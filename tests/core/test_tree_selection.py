"""maxnorm_jax/_tree.py: which leaves a constraint takes, and their paths."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj
from maxnorm_jax import _tree
from tests.core.trees import assert_trees_all_equal


def _apply(tx, params, updates):
  return jax.jit(tx.update)(updates, tx.init(params), params)


def test_biases_and_scalars_are_untouched_by_default():
  params = {"kernel": jnp.full((2, 2), 10.0), "bias": jnp.full((2,), 10.0),
            "scale": jnp.asarray(10.0)}
  updates = jax.tree.map(jnp.ones_like, params)
  new, _ = _apply(mnj.max_norm(1.0), params, updates)
  assert new["bias"] is updates["bias"] or np.array_equal(new["bias"], updates["bias"])
  np.testing.assert_array_equal(np.asarray(new["scale"]), 1.0)
  assert not np.array_equal(np.asarray(new["kernel"]), 1.0)


def test_masks_bool_tree_prefix_and_callable_agree():
  params = {"enc": {"kernel": jnp.full((2, 2), 5.0)}, "dec": {"kernel": jnp.full((2, 2), 5.0)}}
  updates = jax.tree.map(jnp.zeros_like, params)
  full = {"enc": {"kernel": True}, "dec": {"kernel": False}}
  prefix = {"enc": True, "dec": False}
  results = [_apply(mnj.max_norm(1.0, mask=m), params, updates)[0]
             for m in (full, prefix, mnj.paths_matching("^enc/"), lambda p: full)]
  for r in results[1:]:
    assert_trees_all_equal(r, results[0])
  np.testing.assert_array_equal(np.asarray(results[0]["dec"]["kernel"]), 0.0)
  assert np.all(np.asarray(results[0]["enc"]["kernel"]) < 0)


def test_paths_matching_renders_paths_and_drops_nnx_value():
  params = {"layers": [{"kernel": jnp.ones((2, 2))}, {"kernel": jnp.ones((2, 2))}]}
  assert mnj.paths_matching(r"layers/1/kernel$")(params) == {
      "layers": [{"kernel": False}, {"kernel": True}]}
  nnx = pytest.importorskip("flax.nnx")
  model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  (path, _), = [x for x in jax.tree_util.tree_flatten_with_path(state)[0]
                if "kernel" in jax.tree_util.keystr(x[0])]
  assert mnj.path_to_str(path) == "kernel"


def test_mask_that_does_not_match_params(trace):
  with pytest.raises(ValueError, match="the mask does not match the params"):
    trace(mnj.max_norm(3.0, mask={"Dense_0": True, "Other": False}))
  with pytest.raises(ValueError, match="must hold Python bools.*'Dense_0/kernel'"):
    trace(mnj.max_norm(3.0, mask={"Dense_0": {"kernel": "yes", "bias": False},
                                  "Conv_0": False}))


def test_paths_matching_pattern_that_matches_nothing_lists_the_paths(trace):
  with pytest.raises(ValueError, match=r"'Dense_1/kernel\$' matches no parameter path\. "
                     r"The paths are: Conv_0/kernel, Dense_0/bias, Dense_0/kernel"):
    trace(mnj.max_norm(3.0, mask=mnj.paths_matching(r"Dense_0/kernel$", r"Dense_1/kernel$")))


def test_paths_matching_bad_arguments():
  with pytest.raises(ValueError, match="at least one"):
    mnj.paths_matching()
  with pytest.raises(ValueError, match="invalid regular expression"):
    mnj.paths_matching("(")
  with pytest.raises(TypeError, match="as str"):
    mnj.paths_matching(3)


def test_callable_mask_used_as_schedule_by_inject_hyperparams_is_explained(small_params):
  tx = optax.inject_hyperparams(mnj.max_norm)(
      max_value=3.0, mask=mnj.paths_matching(r"kernel$"))
  with pytest.raises(TypeError, match=r"static_args=\('mask',\)"):
    tx.init(small_params)


class _Holder:
  """A pytree node that is not a dict, list or tuple, like a module."""

  def __init__(self, w, b):
    self.w, self.b = w, b


jax.tree_util.register_pytree_with_keys(
    _Holder, lambda h: (((jax.tree_util.GetAttrKey("w"), h.w),
                         (jax.tree_util.GetAttrKey("b"), h.b)), None),
    lambda _, children: _Holder(*children))


def test_flatten_follows_jax_order_and_finds_each_leafs_module():
  tree = {"a": [_Holder(jnp.ones((2, 2)), None), None], "b": (jnp.zeros(3), (), {}),
          "c": _Holder({"x": jnp.ones(1)}, jnp.ones(2)),
          "d": optax.transforms.MaskedNode()}  # what optax.masked puts in masked-out places
  leaves, treedef = _tree.flatten(tree)
  flat, expected_treedef = jax.tree_util.tree_flatten_with_path(tree)
  assert treedef == expected_treedef
  assert [leaf.path for leaf in leaves] == [path for path, _ in flat]
  assert all(leaf.value is x for leaf, (_, x) in zip(leaves, flat))
  assert [(leaf.module, leaf.field) for leaf in leaves] == [
      (_Holder, "w"), (None, None), (_Holder, "w"), (_Holder, "b")]
  assert [leaf.name for leaf in leaves] == ["a/0/w", "b/0", "c/w/x", "c/b"]
