"""maxnorm_jax/_numerics.py: neuron norms, right for any finite weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maxnorm_jax as mnj
from maxnorm_jax import _numerics

pytestmark = pytest.mark.usefixtures("both_lowerings")


def _norms64(w, axis=0):
  return np.linalg.norm(np.asarray(w, np.float64), axis=axis)


def test_neuron_norms_returns_none_for_leaves_left_out():
  params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "bias": jnp.zeros(2)}
  assert mnj.neuron_norms(params)["bias"] is None
  assert jax.tree.leaves(mnj.neuron_norms(params))[0].shape == (2,)


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e38, 1e-20, 1e-25, 1e-35])
def test_norms_of_huge_and_tiny_neurons_are_exact(scale):
  """Squaring overflows past ~1.8e19 and underflows below ~1e-19 in float32."""
  rng = np.random.default_rng(0)
  w = rng.uniform(0.5, 1.5, size=(64, 3)) * np.array([scale, 1.0, scale / 3])
  w32 = jnp.asarray(w, jnp.float32)
  expected = _norms64(np.asarray(w32))
  got = np.asarray(jax.jit(mnj.neuron_norms)({"k": w32})["k"], np.float64)
  if np.all(np.isfinite(expected)) and np.all(expected < 3e38):
    np.testing.assert_allclose(got, expected, rtol=2e-6)
  else:
    assert np.isinf(got[0])


def test_norm_beyond_the_float_range_is_inf_not_zero():
  w = jnp.array([[3e38, 1.0], [3e38, 1.0]])
  np.testing.assert_array_equal(np.asarray(mnj.neuron_norms({"k": w})["k"]),
                                [np.inf, np.sqrt(np.float32(2))])


def test_ordinary_norms_take_the_fast_path_bit_for_bit():
  w = jnp.asarray(np.random.default_rng(1).normal(size=(300, 7)), jnp.float32)
  fast = jnp.sqrt(jnp.sum(w * w, axis=0))
  np.testing.assert_array_equal(np.asarray(jax.jit(mnj.neuron_norms)({"k": w})["k"]),
                                np.asarray(jax.jit(lambda w: jnp.sqrt(jnp.sum(w * w, axis=0)))(w)))
  np.testing.assert_allclose(np.asarray(fast), _norms64(w), rtol=1e-6)


def test_non_finite_neurons_have_non_finite_norms():
  w = jnp.array([[jnp.nan, jnp.inf, 1.0], [1.0, 1.0, 1.0]])
  got = np.asarray(mnj.neuron_norms({"k": w})["k"])
  assert np.isnan(got[0]) and np.isinf(got[1]) and got[2] == pytest.approx(np.sqrt(2))


@pytest.mark.parametrize("shape,expected", [((0, 4), np.zeros(4)), ((4, 0), np.zeros(0)),
                                            ((3, 0, 2), np.zeros(2))])
def test_empty_leaves_have_zero_norms_or_no_neuron(shape, expected):
  np.testing.assert_array_equal(np.asarray(mnj.neuron_norms({"k": jnp.ones(shape)})["k"]),
                                expected)


def test_scaled_norms_are_exact_for_the_largest_and_smallest_floats():
  big = np.float32(np.finfo(np.float32).max)
  w = jnp.array([[big, 0.0, 1e-30], [big, 0.0, 2e-30]], jnp.float32)
  norms = _numerics.neuron_norms((w,), (0,))
  np.testing.assert_array_equal(np.asarray(norms.finite), [[True, True, True]])
  assert np.all(np.isfinite(np.asarray(norms.scaled)))
  np.testing.assert_array_equal(np.asarray(norms.value)[:, 1], 0.0)  # a zero neuron
  np.testing.assert_allclose(np.asarray(norms.value)[0, 2], np.sqrt(5) * 1e-30, rtol=1e-6)
  assert np.isinf(np.asarray(norms.value)[0, 0])
  np.testing.assert_allclose(
      np.asarray(norms.scaled, np.float64)[0, 0] / np.asarray(norms.unit, np.float64)[0, 0],
      np.sqrt(2) * np.float64(big), rtol=1e-6)
