"""What each constraint does to the updates, leaf by leaf and neuron by neuron."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj
from tests.core.trees import assert_trees_all_equal


def _kernel_with_norms(norms, fan_in=5, seed=0):
  """A (fan_in, len(norms)) kernel whose column j has norm norms[j]."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(fan_in, len(norms)))
  w = w / np.linalg.norm(w, axis=0) * np.asarray(norms)
  return jnp.asarray(w, jnp.float32)


def _apply(tx, params, updates):
  state = tx.init(params)
  new_updates, state = jax.jit(tx.update)(updates, state, params)
  return new_updates, state


def test_interior_neurons_keep_their_update_bit_for_bit():
  params = {"kernel": _kernel_with_norms([0.5, 2.9, 10.0, 1.0])}
  updates = {"kernel": _kernel_with_norms([0.01, 0.02, 0.03, 0.04], seed=1)}
  new, _ = _apply(mnj.max_norm(3.0), params, updates)
  after = np.linalg.norm(np.asarray(params["kernel"] + updates["kernel"], np.float64), axis=0)
  inside = after <= 3.0
  assert inside.tolist() == [True, True, False, True]
  np.testing.assert_array_equal(np.asarray(new["kernel"])[:, inside],
                                np.asarray(updates["kernel"])[:, inside])
  assert not np.array_equal(np.asarray(new["kernel"])[:, ~inside],
                            np.asarray(updates["kernel"])[:, ~inside])


@pytest.mark.uses_optax_optimizers
def test_chain_after_adam_is_bit_identical_to_adam_inside_the_ball():
  params = {"kernel": _kernel_with_norms([0.5, 1.0, 1.5]), "bias": jnp.ones(3)}
  grads = {"kernel": _kernel_with_norms([1.0, 1.0, 1.0], seed=2), "bias": jnp.ones(3)}
  adam = optax.adam(1e-2)
  chained = optax.chain(optax.adam(1e-2), mnj.max_norm(3.0))
  u_adam, _ = adam.update(grads, adam.init(params), params)
  u_chain, _ = chained.update(grads, chained.init(params), params)
  assert_trees_all_equal(u_chain, u_adam)


def test_neurons_outside_are_scaled_onto_the_sphere_keeping_direction():
  w = _kernel_with_norms([5.0, 30.0, 3.5])
  new, _ = _apply(mnj.max_norm(3.0), {"kernel": jnp.zeros_like(w)}, {"kernel": w})
  np.testing.assert_allclose(np.linalg.norm(np.asarray(new["kernel"]), axis=0), 3.0,
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["kernel"]) / 3.0,
                             np.asarray(w) / np.linalg.norm(np.asarray(w), axis=0),
                             rtol=1e-5)


def test_zero_neurons_and_zero_updates_give_no_nan():
  params = {"kernel": jnp.zeros((4, 3))}
  for tx in (mnj.max_norm(3.0), mnj.min_max_norm(0.5, 1.0), mnj.unit_norm(), mnj.non_neg()):
    new, state = _apply(tx, params, {"kernel": jnp.zeros((4, 3))})
    assert np.all(np.isfinite(np.asarray(new["kernel"])))
    assert all(np.isfinite(np.asarray(x)) for x in jax.tree.leaves(state))
    np.testing.assert_array_equal(np.asarray(new["kernel"]), 0.0)


def test_biases_and_scalars_are_untouched_by_default():
  params = {"kernel": jnp.full((2, 2), 10.0), "bias": jnp.full((2,), 10.0),
            "scale": jnp.asarray(10.0)}
  updates = jax.tree.map(jnp.ones_like, params)
  new, _ = _apply(mnj.max_norm(1.0), params, updates)
  assert new["bias"] is updates["bias"] or np.array_equal(new["bias"], updates["bias"])
  np.testing.assert_array_equal(np.asarray(new["scale"]), 1.0)
  assert not np.array_equal(np.asarray(new["kernel"]), 1.0)


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (3, 4, 8), (2, 2, 2, 3, 8)])
def test_conv_kernels_have_neurons_on_the_last_axis(shape):
  w = jnp.asarray(np.random.default_rng(0).normal(size=shape) * 3, jnp.float32)
  projected = mnj.project_max_norm({"k": w}, 1.0)["k"]
  norms = np.sqrt((np.asarray(projected, np.float64) ** 2).reshape(-1, shape[-1]).sum(0))
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
  np.testing.assert_allclose(mnj.neuron_norms({"k": projected})["k"], norms, rtol=1e-6)


def test_explicit_axis_has_keras_meaning():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 4, 8)) * 3, jnp.float32)
  projected = mnj.project_max_norm({"k": w}, 1.0, axis=(0, 1))["k"]
  norms = np.sqrt((np.asarray(projected, np.float64) ** 2).sum(axis=(0, 1)))
  assert norms.shape == (4, 8)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
  assert mnj.neuron_norms({"k": w}, axis=-1)["k"].shape == (3, 3, 4)


def test_min_max_norm_rate_blends_towards_the_range():
  w = _kernel_with_norms([0.5, 1.5, 4.0])
  out = mnj.project_min_max_norm({"k": w}, 1.0, 2.0, rate=0.5)["k"]
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=0),
                             [0.75, 1.5, 3.0], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[:, 1], np.asarray(w)[:, 1])


def test_unit_norm_and_non_neg():
  w = _kernel_with_norms([0.5, 7.0])
  np.testing.assert_allclose(
      np.linalg.norm(np.asarray(mnj.project_unit_norm({"k": w})["k"]), axis=0), 1.0,
      rtol=1e-6)
  params = {"k": jnp.array([[1.0, -1.0], [0.5, 2.0]])}
  updates = {"k": jnp.array([[-2.0, 0.5], [0.25, -1.0]])}
  new, state = _apply(mnj.non_neg(), params, updates)
  np.testing.assert_array_equal(
      np.asarray(optax.apply_updates(params, new)["k"]), [[0.0, 0.0], [0.75, 1.0]])
  np.testing.assert_array_equal(np.asarray(new["k"])[1], np.asarray(updates["k"])[1])
  assert float(state.fraction_at_bound) == pytest.approx(0.5)


def test_telemetry_reports_share_at_bound_and_largest_norm():
  params = {"a": _kernel_with_norms([1.0, 4.0, 2.0, 6.0]), "b": _kernel_with_norms([0.5])}
  updates = jax.tree.map(jnp.zeros_like, params)
  tx = optax.chain(optax.identity(), mnj.max_norm(3.0))
  _, state = _apply(tx, params, updates)
  assert float(optax.tree_utils.tree_get(state, "fraction_at_bound")) == pytest.approx(2 / 5)
  assert float(optax.tree_utils.tree_get(state, "largest_norm")) == pytest.approx(6.0, rel=1e-6)


def test_nan_updates_pass_through_and_show_in_telemetry():
  params = {"k": jnp.ones((2, 2))}
  updates = {"k": jnp.array([[jnp.nan, 0.0], [0.0, 0.0]])}
  new, state = _apply(mnj.max_norm(3.0), params, updates)
  assert np.isnan(np.asarray(new["k"])[0, 0])
  assert np.isnan(float(state.largest_norm))


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


def test_project_max_norm_equals_the_transformation():
  w = _kernel_with_norms([0.5, 5.0, 30.0])
  params = {"kernel": w, "bias": jnp.ones(3)}
  projected = mnj.project_max_norm(params, 3.0)
  new, _ = _apply(mnj.max_norm(3.0), jax.tree.map(jnp.zeros_like, params), params)
  np.testing.assert_allclose(np.asarray(new["kernel"]), np.asarray(projected["kernel"]),
                             rtol=1e-6)
  assert projected["bias"] is params["bias"]


@pytest.mark.uses_optax_optimizers
def test_inside_a_jitted_train_step_the_updates_stay_bit_identical_to_adams():
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(32, 16)) * 0.1, jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(16, 4)) * 0.1, jnp.float32)}
  x = jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)

  def updates_of(tx):
    @jax.jit
    def step(params, state):
      grads = jax.grad(lambda p: jnp.sum(jnp.tanh(x @ p["w1"]) @ p["w2"]))(params)
      return tx.update(grads, state, params)[0]
    return step(params, tx.init(params))

  assert_trees_all_equal(updates_of(optax.chain(optax.adam(1e-2), mnj.max_norm(100.0))),
                         updates_of(optax.adam(1e-2)))
