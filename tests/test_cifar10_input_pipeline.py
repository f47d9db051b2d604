"""Splits, on-device shuffling and batching, and the masked last batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.cifar10 import input_pipeline as ip
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import TrainState, create_train_state, train_step


def test_article_splits_have_the_documented_sizes_and_are_disjoint():
  train, val = ip.split_indices(50_000, 5_000, seed=0)
  assert (len(train), len(val)) == (45_000, 5_000)
  assert not set(train) & set(val)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(50_000))
  train2, val2 = ip.split_indices(50_000, 5_000, seed=0)
  np.testing.assert_array_equal(val, val2)  # Fixed seed, fixed split.
  assert not np.array_equal(val, ip.split_indices(50_000, 5_000, seed=1)[1])


@pytest.mark.parametrize("val_size", [0, 100])
def test_split_rejects_sizes_that_leave_a_split_empty(val_size):
  with pytest.raises(ValueError, match="val_size"):
    ip.split_indices(100, val_size, seed=0)


def test_epoch_order_visits_every_example_once_and_pads_to_whole_batches():
  key = jax.random.key(0)
  order = np.asarray(ip.epoch_order(key, 1, 10, batch_size=4))
  assert order.shape == (12,)
  np.testing.assert_array_equal(order[10:], -1)
  np.testing.assert_array_equal(np.sort(order[:10]), np.arange(10))
  # Deterministic in (key, epoch), different across epochs: a resumed run sees the same data.
  np.testing.assert_array_equal(order, ip.epoch_order(key, 1, 10, batch_size=4))
  assert not np.array_equal(order, ip.epoch_order(key, 2, 10, batch_size=4))


def test_batch_at_gathers_normalises_and_masks_padding():
  images = np.arange(5 * 32 * 32 * 3, dtype=np.uint32).reshape(5, 32, 32, 3) % 256
  data = ip.Split(jnp.asarray(images, jnp.uint8), jnp.arange(5, dtype=jnp.int32))
  order = ip.eval_order(5, batch_size=3)
  last = ip.batch_at(data, order, 1, batch_size=3)
  assert last.images.shape == (3, 32, 32, 3) and last.images.dtype == jnp.float32
  np.testing.assert_array_equal(last.labels[:2], [3, 4])
  np.testing.assert_array_equal(last.weights, [1, 1, 0])
  np.testing.assert_allclose(last.images[0], images[3] / 255, rtol=1e-6)
  assert ip.batch_at(data, order, 0, 3, jnp.bfloat16).images.dtype == jnp.bfloat16


def test_padded_last_batch_trains_exactly_like_the_bare_partial_batch():
  # Keras trains on the last, partial batch; we pad it to the fixed batch shape
  # with weight-0 examples, which must not change the update.
  config = get_config("smoke", conv_features=2, dense_features=4)
  graphdef, state, tx = create_train_state(config, jax.random.key(0))
  step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx))
  rng = np.random.default_rng(0)
  data = ip.Split(jnp.asarray(rng.integers(0, 256, (3, 32, 32, 3)), jnp.uint8),
                  jnp.asarray([1, 7, 3], jnp.int32))
  padded = ip.batch_at(data, ip.eval_order(3, batch_size=8), 0, batch_size=8)
  bare = ip.batch_at(data, ip.eval_order(3, batch_size=3), 0, batch_size=3)
  new_padded, sums_padded = step(state, padded)
  new_bare, sums_bare = step(state, bare)
  assert float(sums_padded["count"]) == 3
  np.testing.assert_allclose(sums_padded["loss"], sums_bare["loss"], rtol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
               new_padded.params, new_bare.params)
  assert isinstance(new_padded, TrainState)
