"""The constraints where users put them: jit, optax wrappers, Flax, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from tests.core.trees import assert_trees_all_close

pytestmark = pytest.mark.uses_optax_optimizers


def _params(seed=0, fan_in=16, fan_out=8, scale=1.0):
  rng = np.random.default_rng(seed)
  return {"dense": {"kernel": jnp.asarray(rng.normal(size=(fan_in, fan_out)) * scale,
                                          jnp.float32),
                    "bias": jnp.zeros(fan_out, jnp.float32)}}


def _grads(params, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)


def _max_kernel_norm(params):
  return float(jnp.max(mnj.neuron_norms(params)["dense"]["kernel"]))


def test_jit_traces_once_across_steps():
  traces = 0
  tx = optax.chain(optax.adam(0.5), mnj.max_norm(1.0))

  @jax.jit
  def step(params, state, grads):
    nonlocal traces
    traces += 1
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = _params()
  state = tx.init(params)
  for seed in range(3):
    params, state = step(params, state, _grads(params, seed))
  assert traces == 1
  assert _max_kernel_norm(params) <= 1.0 * (1 + 1e-6)


def test_multisteps_applies_the_constraint_on_the_real_step():
  tx = optax.MultiSteps(optax.chain(optax.sgd(1.0), mnj.max_norm(1.0)), every_k_schedule=2)
  params = _params(scale=0.01)
  state = tx.init(params)
  update = jax.jit(tx.update)
  u1, state = update(_grads(params, 1), state, params)
  np.testing.assert_array_equal(np.asarray(u1["dense"]["kernel"]), 0.0)  # accumulating
  u2, state = update(_grads(params, 2), state, params)
  params = optax.apply_updates(params, u2)
  assert _max_kernel_norm(params) == pytest.approx(1.0, rel=1e-6)


def test_inside_optax_masked():
  params = {"a": _params(0)["dense"], "b": _params(1)["dense"]}
  tx = optax.chain(optax.sgd(1.0), optax.masked(mnj.max_norm(0.5), {"a": True, "b": False}))
  updates, _ = jax.jit(tx.update)(_grads(params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert float(jnp.max(mnj.neuron_norms(new)["a"]["kernel"])) <= 0.5 * (1 + 1e-6)
  assert float(jnp.max(mnj.neuron_norms(new)["b"]["kernel"])) > 0.5


def test_inside_optax_masked_leaf_by_leaf():
  params = _params(scale=3.0)
  tx = optax.masked(mnj.max_norm(0.5), {"dense": {"kernel": True, "bias": False}})
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                                      params)
  assert _max_kernel_norm(optax.apply_updates(params, updates)) == pytest.approx(0.5, rel=1e-6)
  assert float(optax.tree_utils.tree_get(state, "fraction_at_bound")) == 1.0


def test_inject_hyperparams_changes_c_at_run_time():
  tx = optax.chain(
      optax.sgd(1.0),
      optax.inject_hyperparams(mnj.max_norm, static_args=("mask",))(
          max_value=2.0, mask=mnj.paths_matching(r"kernel$")))
  params = _params(scale=3.0)
  state = tx.init(params)
  update = jax.jit(tx.update)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, state = update(zeros, state, params)
  assert _max_kernel_norm(optax.apply_updates(params, updates)) == pytest.approx(2.0, rel=1e-6)
  state[1].hyperparams["max_value"] = jnp.asarray(0.5, jnp.float32)
  updates, state = update(zeros, state, params)
  assert _max_kernel_norm(optax.apply_updates(params, updates)) == pytest.approx(0.5, rel=1e-6)
  assert float(optax.tree_utils.tree_get(state, "fraction_at_bound")) == 1.0


def test_flax_nnx_optimizer():
  nnx = pytest.importorskip("flax.nnx")

  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.hidden = nnx.Linear(6, 32, rngs=rngs)
      self.out = nnx.Linear(32, 2, rngs=rngs)

    def __call__(self, x):
      return self.out(jax.nn.relu(self.hidden(x)))

  model = MLP(nnx.Rngs(0))
  tx = optax.chain(optax.adam(0.3), mnj.max_norm(0.7, mask=mnj.paths_matching("hidden/kernel$")))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.ones((4, 6))

  @nnx.jit
  def train_step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)

  for _ in range(5):
    train_step(model, optimizer)
  norms = mnj.neuron_norms({"k": model.hidden.kernel[...]})["k"]
  assert float(jnp.max(norms)) <= 0.7 * (1 + 1e-6)
  assert float(jnp.max(norms)) == pytest.approx(0.7, rel=1e-5)  # the bound was active
  out_norms = mnj.neuron_norms({"k": model.out.kernel[...]})["k"]
  assert float(jnp.max(out_norms)) > 0.7  # unconstrained layer


def test_flax_linen_train_state():
  linen = pytest.importorskip("flax.linen")
  from flax.training import train_state

  model = linen.Dense(8)
  variables = model.init(jax.random.key(0), jnp.ones((1, 16)))
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=variables["params"],
      tx=optax.chain(optax.adam(0.5), mnj.max_norm(0.3)))

  @jax.jit
  def train_step(state):
    grads = jax.grad(lambda p: jnp.sum(state.apply_fn({"params": p}, jnp.ones((2, 16)))))(
        state.params)
    return state.apply_gradients(grads=grads)

  for _ in range(3):
    state = train_step(state)
  assert float(jnp.max(mnj.neuron_norms(state.params)["kernel"])) <= 0.3 * (1 + 1e-6)
  assert float(optax.tree_utils.tree_get(state.opt_state, "fraction_at_bound")) > 0


@pytest.mark.parametrize("spec", [P("data", None), P(None, "data"), P(None, None)],
                         ids=["input-axis", "output-axis", "replicated"])
def test_sharded_kernel_equals_unsharded(spec):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  params = _params(fan_in=64, fan_out=16, scale=0.5)
  grads = _grads(params)
  tx = optax.chain(optax.adam(0.3), mnj.max_norm(2.0))

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  expected, expected_state = jax.jit(step)(params, tx.init(params), grads)

  shard = lambda tree: jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh, spec if x.ndim == 2 else P())), tree)
  sharded_params, sharded_grads = shard(params), shard(grads)
  got, got_state = jax.jit(step)(sharded_params, tx.init(sharded_params), sharded_grads)
  assert got["dense"]["kernel"].sharding.is_equivalent_to(
      sharded_params["dense"]["kernel"].sharding, 2)
  assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-7)
  assert_trees_all_close(got_state[1], expected_state[1], rtol=1e-6)
  assert float(expected_state[1].fraction_at_bound) > 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_keep_their_dtype(dtype):
  """Norm constraints return float32 updates for bf16/fp16 leaves (see max_norm's
  docstring); optax.apply_updates casts the sum back, so the params keep their dtype."""
  params = jax.tree.map(lambda x: x.astype(dtype), _params(scale=2.0))
  updates = jax.tree.map(lambda x: x.astype(dtype), _grads(params))
  for tx in (mnj.max_norm(1.0), mnj.min_max_norm(0.5, 1.0, 0.5), mnj.unit_norm(),
             mnj.non_neg()):
    with jax.numpy_dtype_promotion("strict"):
      new, state = jax.jit(tx.update)(updates, tx.init(params), params)
    norm_constraint = isinstance(state, mnj.NormConstraintState)
    assert new["dense"]["kernel"].dtype == (jnp.float32 if norm_constraint else dtype)
    assert new["dense"]["bias"].dtype == dtype  # not constrained: untouched
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
    after = optax.apply_updates(params, new)
    assert jax.tree.map(lambda x: x.dtype, after) == jax.tree.map(lambda x: x.dtype, params)
  with jax.numpy_dtype_promotion("strict"):
    new, _ = mnj.max_norm(1.0).update(updates, mnj.max_norm(1.0).init(params), params)
  after = optax.apply_updates(params, new)
  assert after["dense"]["kernel"].dtype == dtype
  norms = np.linalg.norm(np.asarray(after["dense"]["kernel"], np.float64), axis=0)
  assert np.all(norms <= 1.0 * (1 + float(jnp.finfo(dtype).eps) / 2) + 1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_params_in_multisteps_and_masked(dtype):
  params = jax.tree.map(lambda x: x.astype(dtype), _params(scale=3.0))
  inner = optax.chain(optax.sgd(1.0), optax.masked(mnj.max_norm(1.0),
                                                   {"dense": {"kernel": True, "bias": False}}))
  tx = optax.MultiSteps(inner, every_k_schedule=2)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for seed in (1, 2):
    grads = jax.tree.map(lambda x: x.astype(dtype), _grads(params, seed))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert params["dense"]["kernel"].dtype == dtype
  norms = np.linalg.norm(np.asarray(params["dense"]["kernel"], np.float64), axis=0)
  np.testing.assert_allclose(norms, 1.0, rtol=float(jnp.finfo(dtype).eps))


def test_per_layer_bounds_on_sharded_params_equal_unsharded():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  params = {"a": _params(0, fan_in=64, fan_out=16, scale=0.5)["dense"],
            "b": _params(1, fan_in=32, fan_out=8, scale=0.5)["dense"]}
  tx = optax.chain(optax.adam(0.3), mnj.max_norm({"a": 2.0, "b": 1.0}))

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  grads = _grads(params)
  expected, expected_state = jax.jit(step)(params, tx.init(params), grads)
  shard = lambda tree: jax.tree.map(
      lambda x: jax.device_put(x, NamedSharding(mesh, P(None, "data") if x.ndim == 2 else P())),
      tree)
  got, got_state = jax.jit(step)(shard(params), tx.init(shard(params)), shard(grads))
  assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-7)
  assert_trees_all_close(got_state[1], expected_state[1], rtol=1e-6)
  for name, c in (("a", 2.0), ("b", 1.0)):
    assert _max_norm_of(got[name]["kernel"]) == pytest.approx(c, rel=1e-6)


def _max_norm_of(kernel):
  return float(jnp.max(mnj.neuron_norms({"k": kernel})["k"]))


def test_pure_functions_under_jit_and_vmap():
  params = _params(scale=3.0)
  jitted = jax.jit(mnj.project_max_norm, static_argnames=("axis", "mask"))(params, 1.0)
  assert_trees_all_close(jitted, mnj.project_max_norm(params, 1.0), rtol=1e-6)
  stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params)
  per_member = jax.vmap(lambda p: mnj.project_max_norm(p, 1.0, mask={"dense": {
      "kernel": True, "bias": False}}))(stacked)
  assert_trees_all_close(jax.tree.map(lambda x: x[0], per_member),
                         mnj.project_max_norm(params, 1.0), rtol=1e-6)
