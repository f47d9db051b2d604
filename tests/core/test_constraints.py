"""maxnorm_jax/_constraints.py, transformations: what each does to the updates; telemetry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj
from tests.core.trees import assert_trees_all_equal

pytestmark = pytest.mark.usefixtures("both_lowerings")


def _apply(tx, params, updates):
  state = tx.init(params)
  new_updates, state = jax.jit(tx.update)(updates, state, params)
  return new_updates, state


def _norms64(w):
  w = np.asarray(w, np.float64)
  return np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0)


# ---------------------------------------------------------------- semantics


def test_interior_neurons_keep_their_update_bit_for_bit(kernel_with_norms):
  params = {"kernel": kernel_with_norms([0.5, 2.9, 10.0, 1.0])}
  updates = {"kernel": kernel_with_norms([0.01, 0.02, 0.03, 0.04], seed=1)}
  new, _ = _apply(mnj.max_norm(3.0), params, updates)
  after = np.linalg.norm(np.asarray(params["kernel"] + updates["kernel"], np.float64), axis=0)
  inside = after <= 3.0
  assert inside.tolist() == [True, True, False, True]
  np.testing.assert_array_equal(np.asarray(new["kernel"])[:, inside],
                                np.asarray(updates["kernel"])[:, inside])
  assert not np.array_equal(np.asarray(new["kernel"])[:, ~inside],
                            np.asarray(updates["kernel"])[:, ~inside])


@pytest.mark.uses_optax_optimizers
def test_chain_after_adam_is_bit_identical_to_adam_inside_the_ball(kernel_with_norms):
  params = {"kernel": kernel_with_norms([0.5, 1.0, 1.5]), "bias": jnp.ones(3)}
  grads = {"kernel": kernel_with_norms([1.0, 1.0, 1.0], seed=2), "bias": jnp.ones(3)}
  adam = optax.adam(1e-2)
  chained = optax.chain(optax.adam(1e-2), mnj.max_norm(3.0))
  u_adam, _ = adam.update(grads, adam.init(params), params)
  u_chain, _ = chained.update(grads, chained.init(params), params)
  assert_trees_all_equal(u_chain, u_adam)


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


def test_neurons_outside_are_scaled_onto_the_sphere_keeping_direction(kernel_with_norms):
  w = kernel_with_norms([5.0, 30.0, 3.5])
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


def test_unit_norm_and_non_neg(kernel_with_norms):
  w = kernel_with_norms([0.5, 7.0])
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


def test_telemetry_reports_share_at_bound_and_largest_norm(kernel_with_norms):
  params = {"a": kernel_with_norms([1.0, 4.0, 2.0, 6.0]), "b": kernel_with_norms([0.5])}
  updates = jax.tree.map(jnp.zeros_like, params)
  tx = optax.chain(optax.identity(), mnj.max_norm(3.0))
  _, state = _apply(tx, params, updates)
  assert float(optax.tree_utils.tree_get(state, "fraction_at_bound")) == pytest.approx(2 / 5)
  assert float(optax.tree_utils.tree_get(state, "largest_norm")) == pytest.approx(6.0, rel=1e-6)


def test_params_none_says_why_params_are_needed(small_params):
  tx = mnj.max_norm(3.0)
  state = tx.init(small_params)
  for t in (tx, mnj.non_neg()):
    with pytest.raises(ValueError, match="needs the current parameters"):
      t.update(small_params, state)


# ---------------------------------------------------------------- low precision


def _neuron(values, dtype):
  return jnp.asarray(np.asarray(values, np.float32).reshape(-1, 1), dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("norm", [300.0, 100.0, 30.0, 3.0])
def test_low_precision_neurons_land_within_c_plus_the_rounding_of_the_target(dtype, norm):
  """The issue's case: a bf16 neuron of norm 300 used to land at norm 1.4 (or on 0)."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(64, 6))
  w[:, 0] = 1.0  # all entries equal: this one used to become all zeros
  params = {"k": jnp.asarray(w / np.linalg.norm(w, axis=0) * norm, dtype)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  for tx in (mnj.max_norm(1.0), mnj.min_max_norm(0.5, 1.0), mnj.unit_norm()):
    updates, _ = _apply(tx, params, zeros)
    assert updates["k"].dtype == jnp.float32  # see max_norm's docstring
    with jax.numpy_dtype_promotion("standard"):
      after = optax.apply_updates(params, updates)["k"]
    assert after.dtype == dtype
    # Every neuron starts above 1, so all three constraints project onto norm 1.
    target = np.asarray(mnj.project_max_norm(params, 1.0)["k"].astype(jnp.float32), np.float64)
    half_ulp = float(jnp.finfo(dtype).eps) / 2
    assert np.all(_norms64(after) <= 1.0 * (1 + half_ulp) + 1e-6)
    np.testing.assert_allclose(np.asarray(after, np.float64), target, rtol=half_ulp * 2,
                               atol=1e-6)


def test_low_precision_neuron_300_400_is_projected_not_zeroed():
  params = {"k": _neuron([300.0, 400.0], jnp.bfloat16)}
  updates, _ = _apply(mnj.max_norm(1.0), params, jax.tree.map(jnp.zeros_like, params))
  with jax.numpy_dtype_promotion("standard"):
    after = optax.apply_updates(params, updates)["k"]
  np.testing.assert_array_equal(np.asarray(after, np.float32).ravel(),
                                np.asarray(jnp.asarray([0.6, 0.8], jnp.bfloat16), np.float32))


def test_non_neg_keeps_the_dtype_and_lands_on_zero_exactly():
  params = {"k": jnp.asarray([[300.0, -0.5]], jnp.bfloat16)}
  updates = {"k": jnp.asarray([[-301.0, 0.25]], jnp.bfloat16)}
  new, _ = _apply(mnj.non_neg(), params, updates)
  assert new["k"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(optax.apply_updates(params, new)["k"], np.float32),
                                [[0.0, 0.0]])


# ---------------------------------------------------------------- any finite weights


@pytest.mark.parametrize("scale", [1e19, 1e20, 1e30, 1e38])
def test_huge_finite_weights_are_projected_not_zeroed(scale):
  """Their squares overflow float32; the update still lands on the sphere."""
  w = np.array([[1.0, 3.0], [2.0, 4.0], [1e-3, 0.0]], np.float32) * np.float32([scale, 1.0])
  params = {"k": jnp.zeros((3, 2))}
  updates, state = _apply(mnj.max_norm(1.0), params, {"k": jnp.asarray(w)})
  after = np.asarray(optax.apply_updates(params, updates)["k"], np.float64)
  np.testing.assert_allclose(_norms64(after), [1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(after[:, 0], w[:, 0] / _norms64(w)[0], rtol=1e-6, atol=1e-12)
  assert float(state.fraction_at_bound) == 1.0
  assert float(state.largest_norm) == pytest.approx(_norms64(w)[0], rel=1e-6)


def test_huge_params_are_projected_up_to_the_rounding_of_params_plus_updates():
  """params + updates is added in float32: with params at 2e19, its rounding is ~2e12."""
  params = {"k": _neuron([2e19, 1.0], jnp.float32)}
  updates, state = _apply(mnj.max_norm(1.0), params, jax.tree.map(jnp.zeros_like, params))
  after = np.asarray(optax.apply_updates(params, updates)["k"], np.float64)
  assert np.all(_norms64(after) <= 1.0)
  np.testing.assert_allclose(np.asarray(params["k"] + updates["k"], np.float64),
                             [[1.0], [5e-20]], atol=np.spacing(np.float32(2e19)))
  assert float(state.largest_norm) == pytest.approx(2e19, rel=1e-6)  # not inf


@pytest.mark.parametrize("scale", [1e-20, 1e-25, 1e-30])
def test_tiny_neurons_are_normalised_by_unit_norm(scale):
  params = {"k": jnp.asarray(np.array([[3.0, 0.0], [4.0, 0.0]]) * scale, jnp.float32)}
  updates, state = _apply(mnj.unit_norm(), params, jax.tree.map(jnp.zeros_like, params))
  after = np.asarray(optax.apply_updates(params, updates)["k"])
  np.testing.assert_allclose(after[:, 0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(after[:, 1], 0.0)
  assert float(state.largest_norm) == pytest.approx(5 * scale, rel=1e-6)


# ---------------------------------------------------------------- non-finite updates


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_pass_through_and_make_the_telemetry_nan(bad):
  params = {"k": jnp.ones((3, 3))}
  u = np.full((3, 3), 5.0, np.float32)
  u[0, 0] = bad
  updates = {"k": jnp.asarray(u)}
  for tx in (mnj.max_norm(3.0), mnj.min_max_norm(0.5, 3.0), mnj.unit_norm()):
    new, state = _apply(tx, params, updates)
    # The neuron with the bad value keeps its update as it was, element for element...
    np.testing.assert_array_equal(np.asarray(new["k"])[:, 0], u[:, 0])
    # ...and the others are projected as if it were not there (an inf sends the
    # leaf down the slow path, which may round differently).
    clean, _ = _apply(tx, {"k": params["k"][:, 1:]}, {"k": updates["k"][:, 1:]})
    np.testing.assert_allclose(np.asarray(new["k"])[:, 1:], np.asarray(clean["k"]), rtol=1e-6)
    assert np.isnan(float(state.fraction_at_bound))
    assert not np.isfinite(float(state.largest_norm))
  new, state = _apply(mnj.non_neg(), params, {"k": -updates["k"]})
  np.testing.assert_array_equal(np.asarray(new["k"])[0, 0], -u[0, 0])  # -inf is not hidden
  np.testing.assert_array_equal(np.asarray(optax.apply_updates(params, new)["k"])[1:], 0.0)
  assert np.isnan(float(state.fraction_at_bound))


def test_nan_updates_pass_through_and_show_in_telemetry():
  params = {"k": jnp.ones((2, 2))}
  updates = {"k": jnp.array([[jnp.nan, 0.0], [0.0, 0.0]])}
  new, state = _apply(mnj.max_norm(3.0), params, updates)
  assert np.isnan(np.asarray(new["k"])[0, 0])
  assert np.isnan(float(state.largest_norm))


# ---------------------------------------------------------------- empty leaves


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (3, 0, 2)])
def test_empty_kernels_are_left_as_they_are(shape):
  params = {"k": jnp.ones(shape), "w": jnp.full((2, 2), 5.0)}
  updates = jax.tree.map(jnp.zeros_like, params)
  for tx in (mnj.max_norm(1.0), mnj.min_max_norm(0.5, 1.0), mnj.unit_norm(), mnj.non_neg()):
    new, state = _apply(tx, params, updates)
    assert new["k"].shape == shape
    assert all(np.isfinite(np.asarray(x)) for x in jax.tree.leaves(state))
    if isinstance(state, mnj.NormConstraintState):
      assert float(state.fraction_at_bound) > 0  # the other kernel was constrained
  new, state = _apply(mnj.max_norm(1.0), {"k": params["k"]}, {"k": updates["k"]})
  assert float(state.fraction_at_bound) == 0.0
  assert float(state.largest_norm) == 0.0
