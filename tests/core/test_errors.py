"""Every bad input gets an error that names the problem (and the leaf)."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import maxnorm_jax as mnj

PARAMS = {"Dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
          "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))}}


def _trace(tx, params=PARAMS):
  """Runs init and a jitted update, the two places errors may surface."""
  state = tx.init(params)
  return jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_max_value_must_be_finite_and_positive(value):
  with pytest.raises(ValueError, match="max_value must be finite and > 0"):
    mnj.max_norm(value)
  with pytest.raises(ValueError, match="max_value must be finite and > 0"):
    mnj.project_max_norm(PARAMS, value)


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


def test_params_none_says_why_params_are_needed():
  tx = mnj.max_norm(3.0)
  state = tx.init(PARAMS)
  for t in (tx, mnj.non_neg()):
    with pytest.raises(ValueError, match="needs the current parameters"):
      t.update(PARAMS, state)


def test_axis_out_of_range_names_the_leaf():
  with pytest.raises(ValueError, match=r"axis 2 is out of range for leaf 'Dense_0/kernel' "
                     r"of shape \(4, 3\)"):
    _trace(mnj.max_norm(3.0, axis=2))


@pytest.mark.parametrize("axis", [(), (0, 0), "0", 1.0, (0, None)])
def test_axis_of_bad_form(axis):
  with pytest.raises((ValueError, TypeError), match="axis"):
    mnj.max_norm(3.0, axis=axis)


def test_axis_naming_one_axis_twice_via_negative_index():
  with pytest.raises(ValueError, match="names the same axis twice for leaf 'Dense_0/kernel'"):
    _trace(mnj.max_norm(3.0, axis=(1, -1)))


def test_integer_leaf_selected_names_the_leaf():
  params = {"w": jnp.ones((3, 3), jnp.int32)}
  for tx in (mnj.max_norm(3.0), mnj.non_neg()):
    with pytest.raises(ValueError, match="leaf 'w' has dtype int32"):
      tx.init(params)
  with pytest.raises(ValueError, match="leaf 'w' has dtype int32"):
    mnj.neuron_norms(params)


def test_rank_one_leaf_selected_with_default_axis_names_the_leaf():
  with pytest.raises(ValueError, match="leaf 'Dense_0/bias' has shape \\(3,\\)"):
    _trace(mnj.max_norm(3.0, mask=mnj.paths_matching("bias$")))


def test_mask_that_does_not_match_params():
  with pytest.raises(ValueError, match="the mask does not match the params"):
    _trace(mnj.max_norm(3.0, mask={"Dense_0": True, "Other": False}))
  with pytest.raises(ValueError, match="must hold Python bools.*'Dense_0/kernel'"):
    _trace(mnj.max_norm(3.0, mask={"Dense_0": {"kernel": "yes", "bias": False},
                                    "Conv_0": False}))


def test_mask_that_selects_nothing():
  with pytest.raises(ValueError, match="selects no parameter"):
    _trace(mnj.max_norm(3.0, mask=lambda p: jax.tree.map(lambda _: False, p)))
  with pytest.raises(ValueError, match="every leaf of rank >= 2, and there is none"):
    _trace(mnj.max_norm(3.0), {"bias": jnp.ones(3)})


def test_paths_matching_pattern_that_matches_nothing_lists_the_paths():
  with pytest.raises(ValueError, match=r"'Dense_1/kernel\$' matches no parameter path\. "
                     r"The paths are: Conv_0/kernel, Dense_0/bias, Dense_0/kernel"):
    _trace(mnj.max_norm(3.0, mask=mnj.paths_matching(r"Dense_0/kernel$", r"Dense_1/kernel$")))


def test_paths_matching_bad_arguments():
  with pytest.raises(ValueError, match="at least one"):
    mnj.paths_matching()
  with pytest.raises(ValueError, match="invalid regular expression"):
    mnj.paths_matching("(")
  with pytest.raises(TypeError, match="as str"):
    mnj.paths_matching(3)


def test_updates_with_another_structure():
  tx = mnj.max_norm(3.0)
  with pytest.raises(ValueError, match="updates and params must have the same structure"):
    tx.update({"x": jnp.ones((4, 3))}, tx.init(PARAMS), PARAMS)


def test_callable_mask_used_as_schedule_by_inject_hyperparams_is_explained():
  tx = optax.inject_hyperparams(mnj.max_norm)(
      max_value=3.0, mask=mnj.paths_matching(r"kernel$"))
  with pytest.raises(TypeError, match=r"static_args=\('mask',\)"):
    tx.init(PARAMS)


def test_traced_axis_from_inject_hyperparams_is_explained():
  with pytest.raises(TypeError, match=r"static_args=\('axis',\)"):
    mnj.max_norm(3.0, axis=jnp.asarray(0))
