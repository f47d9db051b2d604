"""The article's CNN: output shape, parameter count, Keras initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import maxnorm_jax as mnj
from experiments.cifar10.models import CNN, DENSE1_KERNEL, count_params, dense1_in_features


def test_article_network_has_kerass_parameter_count():
  model = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0)))  # Shapes only: no 356 MB allocation.
  params = nnx.to_pure_dict(nnx.state(model))
  assert count_params(params) == 88_914_698
  assert params["dense1"]["kernel"].shape == (26 * 26 * 128, 1024)
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 128)
  assert params["dense2"]["kernel"].shape == (1024, 10)


def test_article_network_maps_images_to_ten_float32_logits():
  def forward(images):
    return CNN(rngs=nnx.Rngs(0))(images)
  for dtype in (jnp.float32, jnp.bfloat16):
    out = jax.eval_shape(forward, jax.ShapeDtypeStruct((5, 32, 32, 3), dtype))
    assert out.shape == (5, 10) and out.dtype == jnp.float32


def test_small_network_runs_and_bfloat16_computes_with_float32_params():
  images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  model = CNN(conv_features=4, dense_features=8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  logits = model(images)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)))
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_initialisation_is_kerass_glorot_uniform_kernels_and_zero_biases():
  model = CNN(conv_features=32, dense_features=64, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model))
  for name, layer in params.items():
    np.testing.assert_array_equal(layer["bias"], 0, err_msg=name)
    kernel = np.asarray(layer["kernel"])
    receptive = math.prod(kernel.shape[:-2])
    fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
    limit = math.sqrt(6 / (fan_in + fan_out))  # Keras's glorot_uniform: U(-limit, limit).
    assert np.abs(kernel).max() <= limit, name
    np.testing.assert_allclose(kernel.std(), limit / math.sqrt(3), rtol=0.1, err_msg=name)


def test_dense1_geometry_and_path_are_the_models_own():
  model = nnx.eval_shape(lambda: CNN(conv_features=5, dense_features=7, rngs=nnx.Rngs(0)))
  flat = {mnj.path_to_str(path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]}
  assert flat[DENSE1_KERNEL].shape == (dense1_in_features(5), 7) == (26 * 26 * 5, 7)


def _dense1_inputs(model, images):
  """What the hidden dense layer's output is computed from, by a probe on dense2."""
  seen = {}
  dense2 = model.dense2

  class Probe(nnx.Module):
    def __call__(self, x):
      seen["x"] = x
      return dense2(x)
  model.dense2 = Probe()
  return seen


def test_dropout_drops_at_its_rate_while_training_and_never_at_evaluation():
  images = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3))
  plain = CNN(conv_features=4, dense_features=256, rngs=nnx.Rngs(0))
  dropped = CNN(conv_features=4, dense_features=256, dropout=0.5, rngs=nnx.Rngs(0))
  # Evaluation (no key): the dropout network is the plain one.
  np.testing.assert_array_equal(dropped(images), plain(images))
  # A rate of 0 draws nothing, key or not: the article's network is unchanged.
  np.testing.assert_array_equal(plain(images, dropout_key=jax.random.key(1)), plain(images))
  draws = [str(jax.make_jaxpr(lambda x, m=m: m(x, dropout_key=jax.random.key(1)))(images))
           for m in (plain, dropped)]
  assert "random_bits" not in draws[0] and "random_bits" in draws[1]
  seen_plain, seen_dropped = _dense1_inputs(plain, images), _dense1_inputs(dropped, images)
  plain(images)
  dropped(images, dropout_key=jax.random.key(1))
  live = np.asarray(seen_plain["x"]) > 0  # Units the relu kept.
  kept = np.asarray(seen_dropped["x"])[live]
  assert 0.4 < np.mean(kept == 0) < 0.6  # About half the live units are dropped ...
  np.testing.assert_allclose(kept[kept != 0], 2 * np.asarray(seen_plain["x"])[live][kept != 0],
                             rtol=1e-6)  # ... and the others scaled by 1 / (1 - rate).


def test_dropout_masks_are_a_function_of_the_key():
  images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  model = CNN(conv_features=4, dense_features=64, dropout=0.5, conv_dropout=0.3,
              rngs=nnx.Rngs(0))
  a, b, c = (model(images, dropout_key=jax.random.key(k)) for k in (1, 1, 2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a, model(images))
