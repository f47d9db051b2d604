"""maxnorm_jax/_constraints.py, the pure functions: projections at the numerical edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maxnorm_jax as mnj

pytestmark = pytest.mark.usefixtures("both_lowerings")


def _norms64(w):
  w = np.asarray(w, np.float64)
  return np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0)


def test_min_max_norm_rate_blends_towards_the_range(kernel_with_norms):
  w = kernel_with_norms([0.5, 1.5, 4.0])
  out = mnj.project_min_max_norm({"k": w}, 1.0, 2.0, rate=0.5)["k"]
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=0),
                             [0.75, 1.5, 3.0], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[:, 1], np.asarray(w)[:, 1])


def test_project_max_norm_equals_the_transformation(kernel_with_norms):
  w = kernel_with_norms([0.5, 5.0, 30.0])
  params = {"kernel": w, "bias": jnp.ones(3)}
  projected = mnj.project_max_norm(params, 3.0)
  tx = mnj.max_norm(3.0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  new, _ = jax.jit(tx.update)(params, tx.init(zeros), zeros)
  np.testing.assert_allclose(np.asarray(new["kernel"]), np.asarray(projected["kernel"]),
                             rtol=1e-6)
  assert projected["bias"] is params["bias"]


@pytest.mark.parametrize("scale", [1e19, 1e20, 1e30, 3e38])
def test_huge_finite_neurons_are_projected_not_zeroed(scale):
  w = jnp.asarray(np.array([[1.0, 0.5], [1.0, 1.0], [1e-3, 1.0]]) * [scale, 1.0], jnp.float32)
  direction = np.asarray(w, np.float64) / _norms64(w)
  for project in (jax.jit(lambda w: mnj.project_max_norm({"k": w}, 3.0)["k"]),
                  lambda w: mnj.project_max_norm({"k": w}, 3.0)["k"]):
    out = np.asarray(project(w), np.float64)
    np.testing.assert_allclose(_norms64(out), [3.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0], 3.0 * direction[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(out[:, 1], np.asarray(w)[:, 1])  # inside: untouched


@pytest.mark.parametrize("scale", [1e-19, 1e-25, 1e-30, 1e-36])
def test_tiny_neurons_are_normalised(scale):
  w = jnp.asarray(np.array([[3.0, 0.0], [4.0, 0.0]]) * scale, jnp.float32)
  out = np.asarray(jax.jit(mnj.project_unit_norm)({"k": w})["k"])
  np.testing.assert_allclose(out[:, 0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(out[:, 1], 0.0)  # a zero neuron has no direction
  out = np.asarray(mnj.project_min_max_norm({"k": w}, 1.0, 2.0, rate=0.5)["k"], np.float64)
  np.testing.assert_allclose(_norms64(out)[0], 0.5 + 0.5 * 5 * scale, rtol=1e-6)


def test_huge_neurons_with_a_rate_keep_the_unclipped_share():
  w = jnp.asarray([[6e20], [8e20]], jnp.float32)  # norm 1e21
  out = np.asarray(mnj.project_min_max_norm({"k": w}, 0.0, 2.0, rate=0.25)["k"], np.float64)
  np.testing.assert_allclose(_norms64(out), 0.25 * 2.0 + 0.75 * 1e21, rtol=1e-6)


def test_non_finite_neurons_are_left_as_they_are():
  w = jnp.array([[jnp.nan, jnp.inf, 30.0], [1.0, 1.0, 40.0]])
  out = np.asarray(mnj.project_max_norm({"k": w}, 1.0)["k"])
  np.testing.assert_array_equal(out[:, :2], np.asarray(w)[:, :2])
  np.testing.assert_allclose(out[:, 2], [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (2, 0, 3)])
def test_empty_leaves_are_returned_as_they_are(shape):
  w = jnp.ones(shape)
  for project in (lambda p: mnj.project_max_norm(p, 1.0), mnj.project_unit_norm,
                  lambda p: mnj.project_min_max_norm(p, 0.5, 1.0), mnj.project_non_neg):
    assert project({"k": w})["k"].shape == shape


def test_low_precision_projection_is_the_rounded_target():
  w = jnp.asarray([[300.0], [400.0]], jnp.bfloat16)
  out = mnj.project_max_norm({"k": w}, 1.0)["k"]
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float32).ravel(),
                                np.asarray(jnp.asarray([0.6, 0.8], jnp.bfloat16), np.float32))
