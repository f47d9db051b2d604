"""Data parallelism on 8 simulated CPU devices (experiments/cifar10/sharding.py).

The claim under test: the device layout changes nothing but floating-point
summation order. N steps on 8 devices (parameters replicated, or the dense1
kernel split on either axis) give the parameters of 1 device, and max_norm
stays exact when a neuron is split over devices. (That batches are the same
examples bit for bit is tested in test_input_pipeline.py; a real multi-process
run in test_distributed.py.)
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from experiments.cifar10 import input_pipeline, metrics, sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.steps import _train_slice
from experiments.cifar10.train import create_train_state, train_and_evaluate, train_step

# max_norm(1.0) holds the tiny dense1's neurons (initial norms about 1.4) at the bound from
# the first step on, so the projection, and its cross-device norms, are exercised.
CONFIG = get_config("smoke", conv_features=4, dense_features=16, batch_size=32, max_norm=1.0)


def _close(a, b, rtol=2e-5, atol=1e-6):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("axis", ["in", "out"])
def test_max_norm_is_exact_with_the_kernel_split_over_devices(axis):
  # Every neuron (a column) is far outside the ball. Split along "in", each device
  # holds 1/8 of every neuron; split along "out", whole neurons. Either way the norms
  # must cover whole neurons, as on one device.
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  params = {"dense1": {"kernel": jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)}}
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  tx = optax.chain(optax.adam(1e-1), mnj.max_norm(1.0))
  one = jax.jit(tx.update)(grads, tx.init(params), params)

  shardings = sharding.state_shardings(params, mesh, axis)
  spec = P("data", None) if axis == "in" else P(None, "data")
  assert shardings["dense1"]["kernel"].spec == spec
  placed = jax.device_put((params, grads), (shardings, shardings))
  state_shardings = sharding.state_shardings(tx.init(params), mesh, axis)
  state = jax.device_put(tx.init(params), state_shardings)
  mu = optax.tree_utils.tree_get(state, "mu")
  assert mu["dense1"]["kernel"].sharding.spec == spec  # Adam's state is split too.
  updates, new_state = jax.jit(lambda g, s, p: tx.update(g, s, p),
                               out_shardings=(shardings, state_shardings))(
                                   placed[1], state, placed[0])
  assert updates["dense1"]["kernel"].sharding.spec == spec
  assert updates["dense1"]["kernel"].addressable_shards[0].data.size == 64 * 16 // 8
  _close(updates, one[0])
  new_params = optax.apply_updates(params, jax.device_get(updates))
  norms = mnj.neuron_norms(new_params)["dense1"]["kernel"]
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  assert float(optax.tree_utils.tree_get(new_state, "fraction_at_bound")) == 1.0

  # The test can tell: norms taken over each device's part of a neuron (what a
  # hand-written per-device update would do) give other parameters.
  if axis == "in":
    adam = optax.adam(1e-1)
    w = params["dense1"]["kernel"] + jax.jit(adam.update)(grads, adam.init(params))[0][
        "dense1"]["kernel"]
    per_device = jax.jit(jax.shard_map(
        lambda x: mnj.project_max_norm(x, 1.0), mesh=mesh, in_specs=P("data", None),
        out_specs=P("data", None)))(w)
    np.testing.assert_allclose(w * np.minimum(1, 1 / np.linalg.norm(w, axis=0)),
                               new_params["dense1"]["kernel"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_device, new_params["dense1"]["kernel"], rtol=1e-2)


def _train_steps(num_devices, shard_dense1, source, num_steps=2, config=CONFIG):
  """``num_steps`` jitted train steps of ``config``'s network, the data and state laid out
  over ``num_devices`` devices as train_and_evaluate lays them out."""
  mesh = sharding.make_mesh(num_devices)
  graphdef, state, tx = create_train_state(config, jax.random.key(0))
  state_sharding = sharding.state_shardings(state, mesh, shard_dense1)
  state = jax.device_put(state, state_sharding)
  data = input_pipeline.shard_rows(source, np.arange(40), mesh)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  seed = config.seed if config.dropout else None
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=config.batch_size,
                                       dtype=jnp.float32, mesh=mesh, seed=seed),
                     donate_argnums=(0, 1),
                     **sharding.slice_shardings(mesh, state_sharding, train=True))
  order = input_pipeline.epoch_order(jax.random.key(1), 1, 40, config.batch_size)
  totals = metrics.zeros(with_telemetry=True)
  for i in range(num_steps):  # The 2nd batch is partial (8 examples, 24 padding).
    state, totals, _ = train_fn(state, totals, data, order, jnp.int32(i), jnp.int32(i + 1))
  return state, jax.device_get(totals)


@pytest.fixture(scope="module")
def source(fake_source):
  return fake_source(40)


@pytest.fixture(scope="module")
def one_device_steps(source):
  return _train_steps(1, None, source)


@pytest.mark.parametrize("shard_dense1", [None, "in", "out"])
def test_eight_devices_train_like_one(one_device_steps, source, shard_dense1):
  want_state, want_totals = one_device_steps
  state, totals = _train_steps(8, shard_dense1, source)
  kernel = state.params["dense1"]["kernel"]
  if shard_dense1 is None:
    assert kernel.sharding.is_fully_replicated
  else:
    assert kernel.addressable_shards[0].data.size == kernel.size // 8  # 1/8 per device.
    nu = optax.tree_utils.tree_get(state.opt_state, "nu")
    assert nu["dense1"]["kernel"].sharding == kernel.sharding
  assert totals["fraction_at_bound"] > 0  # The constraint was active.
  _close(jax.device_get(state), jax.device_get(want_state))
  _close(totals, want_totals)
  assert float(jnp.max(mnj.neuron_norms(state.params)["dense1"]["kernel"])) <= 1.0 + 1e-5


def test_dropout_draws_the_same_masks_on_eight_devices_as_on_one(source, one_device_steps):
  # Each device draws its share of the batch's masks; together they are one device's.
  config = dataclasses.replace(CONFIG, dropout=0.5, conv_dropout=0.25)
  want_state, want_totals = _train_steps(1, None, source, config=config)
  state, totals = _train_steps(8, "in", source, config=config)
  _close(jax.device_get(state), jax.device_get(want_state))
  _close(totals, want_totals)
  plain, _ = one_device_steps  # And dropout did change the training.
  assert not np.allclose(want_state.params["dense1"]["kernel"],
                         plain.params["dense1"]["kernel"], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=36), "--batch-size 36 does not split evenly over 8 devices"),
    (dict(shard_dense1="out", dense_features=12), "--shard-dense1 out"),
    (dict(num_devices=9), "--num-devices 9 asked for, but there are 8 devices"),
])
def test_layouts_that_do_not_fit_are_clear_errors(tmp_path, overrides, message):
  with pytest.raises(sharding.ParallelConfigError, match=message):
    train_and_evaluate(get_config("smoke", **overrides), tmp_path / "w")
  assert not (tmp_path / "w").exists()  # Raised before anything was written.


