"""im2col convolution: the same function as XLA's convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from experiments.cifar10 import im2col
from experiments.cifar10.models import CNN, resolve_conv_impl

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("cin,strides,padding,size", [
    (3, (1, 1), "VALID", 32), (16, (1, 1), "VALID", 12), (8, (2, 2), "SAME", 11),
    (8, (1, 2), ((1, 2), (0, 1)), 9)])
def test_values_and_gradients_match_lax(cin, strides, padding, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, cin))
  w = jax.random.normal(jax.random.key(1), (3, 3, cin, 5))

  def loss(conv, x, w):
    return jnp.sum(jnp.tanh(conv(x, w, strides, padding, dimension_numbers=DN)))

  want = jax.value_and_grad(loss, argnums=(1, 2))(lax.conv_general_dilated, x, w)
  got = jax.jit(jax.value_and_grad(loss, argnums=(1, 2)), static_argnums=0)(
      im2col.conv_general_dilated, x, w)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


def test_unsupported_cases_fall_back_to_lax():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
  for kwargs in ({"rhs_dilation": (2, 2)}, {"feature_group_count": 2}):
    kernel = w[:, :, :2] if "feature_group_count" in kwargs else w
    got = im2col.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=DN, **kwargs)
    want = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=DN, **kwargs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_cnn_has_the_same_parameters_and_function_with_either_implementation():
  models = {impl: CNN(conv_features=8, dense_features=16, conv_impl=impl, rngs=nnx.Rngs(0))
            for impl in ("xla", "im2col")}
  states = {impl: nnx.to_pure_dict(nnx.state(m, nnx.Param)) for impl, m in models.items()}
  assert jax.tree.structure(states["xla"]) == jax.tree.structure(states["im2col"])
  for a, b in zip(jax.tree.leaves(states["xla"]), jax.tree.leaves(states["im2col"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  images = jax.random.uniform(jax.random.key(2), (4, 32, 32, 3))
  np.testing.assert_allclose(np.asarray(models["im2col"](images)),
                             np.asarray(models["xla"](images)), rtol=1e-5, atol=1e-5)


def test_auto_picks_im2col_on_cpu_only():
  assert resolve_conv_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "xla")
  assert resolve_conv_impl("xla") == "xla"
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    resolve_conv_impl("winograd")
