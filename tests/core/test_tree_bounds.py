"""maxnorm_jax/_tree.py, bounds: checked bounds, bounds per leaf, traced bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj

# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_max_value_must_be_finite_and_positive(small_params, value):
  with pytest.raises(ValueError, match="max_value must be finite and > 0"):
    mnj.max_norm(value)
  with pytest.raises(ValueError, match="max_value must be finite and > 0"):
    mnj.project_max_norm(small_params, value)


@pytest.mark.parametrize("value", ["3", None, True, jnp.ones(2), 1 + 2j])
def test_max_value_must_be_a_real_scalar(value):
  with pytest.raises(TypeError, match="max_value must be"):
    mnj.max_norm(value)


def test_min_value_must_not_exceed_max_value():
  with pytest.raises(ValueError, match=r"min_value \(2.0\) must not exceed max_value \(1.0\)"):
    mnj.min_max_norm(2.0, 1.0)
  with pytest.raises(ValueError, match="min_value must be finite and >= 0"):
    mnj.min_max_norm(-0.5, 1.0)


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan])
def test_rate_must_lie_in_unit_interval(rate):
  with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\]"):
    mnj.min_max_norm(0.0, 1.0, rate)


# ---------------------------------------------------------------- per leaf


def _params():
  rng = np.random.default_rng(0)
  return {"Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)) * 3, jnp.float32)},
          "Dense_0": {"kernel": jnp.asarray(rng.normal(size=(36, 8)) * 3, jnp.float32),
                      "bias": jnp.ones(8)},
          "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(8, 2)) * 3, jnp.float32)}}


def _largest(params):
  return {k: float(jnp.max(v["kernel"])) for k, v in mnj.neuron_norms(params).items()}


def _after(tx, params):
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                                      params)
  return optax.apply_updates(params, updates), state


BOUNDS = {"Conv_0": 1.0, "Dense_0": 2.0, "Dense_1": 0.5}


@pytest.mark.parametrize("spec", ["prefix", "full tree", "callable", "bias None"])
def test_max_value_per_layer(spec):
  params = _params()
  max_value = {
      "prefix": BOUNDS,
      "full tree": {"Conv_0": {"kernel": 1.0}, "Dense_0": {"kernel": 2.0, "bias": 7.0},
                    "Dense_1": {"kernel": 0.5}},
      "callable": lambda path, leaf: BOUNDS[path.split("/")[0]],
      "bias None": {"Conv_0": {"kernel": 1.0}, "Dense_0": {"kernel": 2.0, "bias": None},
                    "Dense_1": {"kernel": 0.5}},
  }[spec]
  new, state = _after(mnj.max_norm(max_value), params)
  assert _largest(new) == pytest.approx(BOUNDS, rel=1e-6)
  assert float(state.fraction_at_bound) == 1.0  # every neuron started above its bound
  assert float(state.largest_norm) == pytest.approx(max(_largest(params).values()), rel=1e-6)
  projected = mnj.project_max_norm(params, max_value)
  assert _largest(projected) == pytest.approx(BOUNDS, rel=1e-6)
  # The same as one constraint per layer.
  for name, c in BOUNDS.items():
    alone, _ = _after(mnj.max_norm(c, mask=mnj.paths_matching(f"^{name}/kernel$")), params)
    np.testing.assert_allclose(new[name]["kernel"], alone[name]["kernel"], rtol=1e-6)


def test_lasagne_recipe_bounds_from_initial_norms():
  """c per layer = a few times the layer's initial largest neuron norm."""
  params = _params()
  bounds = jax.tree.map(lambda n: 0.5 * jnp.max(n), mnj.neuron_norms(params))
  new, _ = _after(mnj.max_norm(bounds), params)
  for name, n in _largest(new).items():
    assert n == pytest.approx(0.5 * _largest(params)[name], rel=1e-6)


def test_min_max_norm_per_layer():
  params = _params()
  tx = mnj.min_max_norm({"Conv_0": 1.0, "Dense_0": 2.0, "Dense_1": 0.1},
                        {"Conv_0": 1.0, "Dense_0": 3.0, "Dense_1": 0.5})
  new, _ = _after(tx, params)
  norms = mnj.neuron_norms(new)
  np.testing.assert_allclose(norms["Conv_0"]["kernel"], 1.0, rtol=1e-6)
  assert np.all((np.asarray(norms["Dense_0"]["kernel"]) >= 2.0 * (1 - 1e-6))
                & (np.asarray(norms["Dense_0"]["kernel"]) <= 3.0 * (1 + 1e-6)))
  assert float(jnp.max(norms["Dense_1"]["kernel"])) == pytest.approx(0.5, rel=1e-6)


def test_per_leaf_bound_errors_name_the_leaf():
  params = _params()
  with pytest.raises(ValueError, match="max_value for leaf 'Dense_1/kernel' must be finite and "
                     r"> 0, got -1.0"):
    mnj.max_norm(dict(BOUNDS, Dense_1=-1.0)).init(params)
  with pytest.raises(TypeError, match="max_value for leaf 'Dense_0/kernel' must be a real"):
    mnj.max_norm(lambda path, leaf: "3" if path == "Dense_0/kernel" else 3.0).init(params)
  with pytest.raises(ValueError, match="max_value has no value for the constrained leaf "
                     "'Dense_0/kernel'"):
    mnj.max_norm(dict(BOUNDS, Dense_0=None)).init(params)
  with pytest.raises(ValueError, match="max_value does not match the params"):
    mnj.max_norm({"Conv_0": 1.0, "Dense_0": 2.0}).init(params)
  with pytest.raises(ValueError, match=r"min_value \(3.0\) must not exceed max_value \(1.0\) "
                     "for leaf 'Conv_0/kernel'"):
    mnj.project_min_max_norm(params, 3.0, BOUNDS)
  with pytest.raises(ValueError, match="max_value for leaf 'Conv_0/kernel' must be finite"):
    mnj.project_max_norm(params, dict(BOUNDS, Conv_0=math.nan))


def test_per_layer_bounds_under_jit_trace_once():
  traces = 0
  tx = mnj.max_norm(lambda path, leaf: BOUNDS[path.split("/")[0]])

  @jax.jit
  def step(params):
    nonlocal traces
    traces += 1
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return optax.apply_updates(params, updates)

  params = _params()
  for _ in range(3):
    params = step(jax.tree.map(lambda x: 2 * x, params))
  assert traces == 1
  assert _largest(params) == pytest.approx(BOUNDS, rel=1e-6)


# ---------------------------------------------------------------- traced bounds


def _zeros_update(tx, params):
  return jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)


@pytest.mark.uses_optax_optimizers
@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf])
def test_invalid_traced_bound_from_inject_hyperparams_makes_the_update_nan(value):
  params = {"k": jnp.array([[3.0], [4.0]]), "b": jnp.ones(1)}
  tx = optax.inject_hyperparams(mnj.max_norm)(max_value=2.0)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
  assert float(jnp.max(mnj.neuron_norms(optax.apply_updates(params, updates))["k"])) == (
      pytest.approx(2.0))
  state.hyperparams["max_value"] = jnp.asarray(value, jnp.float32)
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
  assert np.all(np.isnan(np.asarray(updates["k"])))  # no flipped sign, no silent no-op
  np.testing.assert_array_equal(np.asarray(updates["b"]), 0.0)  # unconstrained leaf
  assert np.isnan(float(state.inner_state.fraction_at_bound))
  assert np.isnan(float(state.inner_state.largest_norm))


@pytest.mark.parametrize("lo,hi,rate", [(-1.0, 2.0, 1.0), (3.0, 2.0, 1.0), (0.5, math.nan, 1.0),
                                        (0.5, 2.0, 1.5), (0.5, 2.0, -0.5), (math.nan, 2.0, 1.0)])
def test_invalid_traced_min_max_bounds_make_the_update_nan(lo, hi, rate):
  params = {"k": jnp.array([[3.0, 0.1], [4.0, 0.1]])}

  @jax.jit
  def run(lo, hi, rate):
    return _zeros_update(mnj.min_max_norm(lo, hi, rate), params)

  updates, state = run(lo, hi, rate)
  assert np.all(np.isnan(np.asarray(updates["k"])))
  assert np.isnan(float(state.fraction_at_bound))
  updates, state = run(0.5, 2.0, 1.0)  # the same trace, valid values
  np.testing.assert_allclose(mnj.neuron_norms(optax.apply_updates(params, updates))["k"],
                             [2.0, 0.5], rtol=1e-6)
  assert float(state.fraction_at_bound) == 1.0


def test_invalid_traced_bound_in_the_pure_functions_gives_nan():
  params = {"k": jnp.array([[3.0], [4.0]])}
  project = jax.jit(lambda c: mnj.project_max_norm(params, c)["k"])
  assert np.all(np.isnan(np.asarray(project(-1.0))))
  assert np.all(np.isnan(np.asarray(project(jnp.nan))))
  np.testing.assert_allclose(np.asarray(project(2.0)).ravel(), [1.2, 1.6], rtol=1e-6)
  # A callable bound that computes the value from the leaf is traced too.
  tx = mnj.max_norm(lambda path, w: jnp.sum(w) - 100.0)  # negative
  with pytest.raises(ValueError, match="max_value for leaf 'k' must be finite and > 0"):
    tx.init(params)  # concrete here, so checked
  updates, state = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p),
                                               p))(params)
  assert np.all(np.isnan(np.asarray(updates["k"])))
  assert np.isnan(float(state.largest_norm))
