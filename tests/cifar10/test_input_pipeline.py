"""Splits, data split by example over the devices, on-device shuffling and batching,
and the masked last batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.cifar10 import input_pipeline as ip
from experiments.cifar10 import sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import TrainState, create_train_state, train_step


def _on_devices(images, labels, num_devices=1):
  """Examples placed as load_splits places them, over ``num_devices`` devices."""
  class Source:
    def __len__(self):
      return len(labels)

    def __getitems__(self, indices):
      return [{"image": images[i], "label": labels[i]} for i in indices]

  mesh = sharding.make_mesh(num_devices)
  return ip.shard_rows(Source(), np.arange(len(labels)), mesh), mesh


def _batch(data, order, index, batch_size, dtype=jnp.float32, *, mesh):
  return jax.jit(functools.partial(ip.batch_at, batch_size=batch_size, dtype=dtype, mesh=mesh))(
      data, order, index)


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
  images = (np.arange(5 * 32 * 32 * 3, dtype=np.uint32).reshape(5, 32, 32, 3) % 256).astype(
      np.uint8)
  data, mesh = _on_devices(images, np.arange(5, dtype=np.int32))
  order = ip.eval_order(5, batch_size=3)
  last = _batch(data, order, 1, 3, mesh=mesh)
  assert last.images.shape == (3, 32, 32, 3) and last.images.dtype == jnp.float32
  np.testing.assert_array_equal(last.labels[:2], [3, 4])
  np.testing.assert_array_equal(last.weights, [1, 1, 0])
  np.testing.assert_allclose(last.images[0], images[3] / 255, rtol=1e-6)
  assert _batch(data, order, 0, 3, jnp.bfloat16, mesh=mesh).images.dtype == jnp.bfloat16


def test_eight_simulated_devices_are_there():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  assert sharding.make_mesh().shape == {"data": 8}
  assert sharding.make_mesh(1).size == 1


def _all_batches(source, index, num_devices):
  mesh = sharding.make_mesh(num_devices)
  sharded = ip.shard_rows(source, index, mesh)
  assert sharded.images.sharding.spec == P("data")
  order = ip.epoch_order(jax.random.key(0), 1, len(index), batch_size=24)
  batches = [_batch(sharded, order, i, 24, jnp.bfloat16, mesh=mesh)
             for i in range(ip.num_batches(len(index), 24))]
  assert all(b.images.sharding.spec == P("data") for b in batches)
  return np.asarray(order), [jax.device_get(b) for b in batches]


@pytest.mark.parametrize("num_devices", [3, 8])
def test_batches_are_the_same_on_any_number_of_devices_bit_for_bit(num_devices, fake_source):
  # 53 of 61 examples: padded to whole shards (3 x 18, 8 x 7) and to whole batches
  # (the last of 3 batches of 24 holds 5 examples and 19 padding slots).
  source = fake_source(61)
  index = np.random.default_rng(1).permutation(61)[:53]
  order, want = _all_batches(source, index, 1)
  _, got = _all_batches(source, index, num_devices)
  for i, (g, w) in enumerate(zip(got, want)):
    for a, b in zip(g, w):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
    ids = order[i * 24:(i + 1) * 24]  # And they are the examples the order names.
    real = index[np.where(ids >= 0, ids, 0)]  # Padding takes example 0, with weight 0.
    np.testing.assert_array_equal(w.labels, source.labels[real])
    np.testing.assert_array_equal(w.weights, (ids >= 0).astype(np.float32))
    np.testing.assert_allclose(w.images.astype(np.float32), source.images[real] / 255,
                               rtol=1e-2)
  assert float(got[-1].weights.sum()) == 53 - 2 * 24


def test_padded_last_batch_trains_exactly_like_the_bare_partial_batch():
  # Keras trains on the last, partial batch; we pad it to the fixed batch shape
  # with weight-0 examples, which must not change the update.
  config = get_config("smoke", conv_features=2, dense_features=4)
  graphdef, state, tx = create_train_state(config, jax.random.key(0))
  step = jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx))
  rng = np.random.default_rng(0)
  data, mesh = _on_devices(rng.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8),
                           np.asarray([1, 7, 3], np.int32))
  padded = _batch(data, ip.eval_order(3, batch_size=8), 0, 8, mesh=mesh)
  bare = _batch(data, ip.eval_order(3, batch_size=3), 0, 3, mesh=mesh)
  new_padded, sums_padded = step(state, padded)
  new_bare, sums_bare = step(state, bare)
  assert float(sums_padded["count"]) == 3
  np.testing.assert_allclose(sums_padded["loss"], sums_bare["loss"], rtol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
               new_padded.params, new_bare.params)
  assert isinstance(new_padded, TrainState)


@pytest.mark.usefixtures("mock_cifar10")
def test_a_val_size_the_data_cannot_hold_is_one_clear_error():
  config = get_config("smoke", val_size=300, train_subset=None, eval_subset=None)
  with pytest.raises(ip.DataUnavailableError,
                     match="--val-size 300 does not fit cifar10's training split of 300 "
                           "examples"):
    ip.load_splits(config, sharding.make_mesh(1))
