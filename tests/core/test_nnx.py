"""maxnorm_jax/nnx.py: constraints declared in Flax NNX metadata."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from tests.core.trees import assert_trees_all_close

nnx = pytest.importorskip("flax.nnx")
pytestmark = pytest.mark.uses_optax_optimizers


class Net(nnx.Module):
  """Two constrained layers with different bounds, declared both ways, and a free one."""

  def __init__(self, rngs, *, sharded=False):
    shard = (lambda *spec: {"out_sharding": spec}) if sharded else (lambda *spec: {})
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs, kernel_init=nnx.with_metadata(
        nnx.initializers.lecun_normal(), max_norm=0.5, **shard(None, None, None, "data")))
    self.hidden = nnx.Linear(8 * 16, 16, rngs=rngs,
                             kernel_metadata={"max_norm": 1.5, **shard(None, "data")})
    self.out = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.conv(x))
    return self.out(jax.nn.relu(self.hidden(h.reshape(h.shape[0], -1))))


X = jax.random.normal(jax.random.key(1), (4, 4, 4, 3))


def _loss(model):
  return jnp.sum(model(X) ** 2)


def _largest(kernel):
  return float(jnp.max(mnj.neuron_norms({"k": kernel[...]})["k"]))


def test_nnx_optimizer_under_nnx_jit_keeps_each_declared_bound():
  model = Net(nnx.Rngs(0))
  tx = optax.chain(optax.adam(0.3), mnj.nnx.constraints_from(model))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    optimizer.update(model, nnx.grad(_loss)(model))

  for _ in range(4):
    step(model, optimizer)
  assert _largest(model.conv.kernel) == pytest.approx(0.5, rel=1e-5)
  assert _largest(model.hidden.kernel) == pytest.approx(1.5, rel=1e-5)
  assert _largest(model.out.kernel) > 1.5  # nothing declared: unconstrained
  assert float(optax.tree_utils.tree_get(optimizer.opt_state, "fraction_at_bound")) > 0


def test_split_state_under_jax_jit_and_sharded_params_agree():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")

  def run(sharded):
    if sharded:
      with jax.set_mesh(Mesh(np.array(jax.devices()[:8]), ("data",))):
        model = Net(nnx.Rngs(0), sharded=True)
    else:
      model = Net(nnx.Rngs(0))
    tx = optax.chain(optax.adam(0.3), mnj.nnx.constraints_from(model))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
      def loss(params):
        return _loss(nnx.merge(graphdef, params, rest))
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return optax.apply_updates(params, updates), state

    for _ in range(3):
      params, state = step(params, state)
    return params, state

  expected, expected_state = run(sharded=False)
  got, got_state = run(sharded=True)
  assert got["hidden"]["kernel"].sharding.spec == P(None, "data")
  assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)
  assert_trees_all_close(got_state[1], expected_state[1], rtol=1e-5)
  assert _largest(got["conv"]["kernel"]) == pytest.approx(0.5, rel=1e-5)
  assert _largest(got["hidden"]["kernel"]) == pytest.approx(1.5, rel=1e-5)


def test_every_kind_of_declaration():
  rngs = nnx.Rngs(0)

  class Declared(nnx.Module):

    def __init__(self):
      big = nnx.initializers.constant(2.0)
      self.a = nnx.Linear(4, 3, kernel_init=big, kernel_metadata={"max_norm": 1.0}, rngs=rngs)
      self.b = nnx.Linear(4, 3, kernel_init=big, rngs=rngs,
                          kernel_metadata={"min_max_norm": (5.0, 6.0)})
      self.c = nnx.Linear(4, 3, kernel_init=big, rngs=rngs,
                          kernel_metadata={"min_max_norm": (0.0, 2.0, 0.5)})
      self.d = nnx.Linear(4, 3, kernel_init=big, rngs=rngs, kernel_metadata={"unit_norm": True})
      self.e = nnx.Linear(4, 3, rngs=rngs, kernel_init=nnx.initializers.constant(-1.0),
                          kernel_metadata={"non_neg": True, "max_norm": 3.0})
      self.f = nnx.Linear(4, 3, kernel_init=big, kernel_metadata={"non_neg": False}, rngs=rngs)

  model = Declared()
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = mnj.nnx.constraints_from(model)
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  norms = mnj.neuron_norms(optax.apply_updates(params, updates))
  expected = {"a": 1.0, "b": 5.0, "c": 0.5 * 2.0 + 0.5 * 4.0, "d": 1.0, "e": 0.0, "f": 4.0}
  for name, norm in expected.items():
    np.testing.assert_allclose(norms[name]["kernel"], norm, rtol=1e-6, err_msg=name)


def test_declaration_errors():
  rngs = nnx.Rngs(0)
  with pytest.raises(ValueError, match="no Param of the model declares a constraint"):
    mnj.nnx.constraints_from(nnx.Linear(2, 2, rngs=rngs))
  with pytest.raises(ValueError, match="'kernel' declares max_norm and unit_norm"):
    mnj.nnx.constraints_from(nnx.Linear(2, 2, rngs=rngs,
                                        kernel_metadata={"max_norm": 1.0, "unit_norm": True}))
  with pytest.raises(ValueError, match=r"'kernel' declares min_max_norm=1.0; give \(min_value"):
    mnj.nnx.constraints_from(nnx.Linear(2, 2, rngs=rngs, kernel_metadata={"min_max_norm": 1.0}))
  with pytest.raises(ValueError, match="'kernel' declares unit_norm='yes'; give True"):
    mnj.nnx.constraints_from(nnx.Linear(2, 2, rngs=rngs, kernel_metadata={"unit_norm": "yes"}))
  model = nnx.Linear(2, 2, rngs=rngs, kernel_metadata={"max_norm": -1.0})
  with pytest.raises(ValueError, match="max_value for leaf 'kernel' must be finite and > 0"):
    mnj.nnx.constraints_from(model).init(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
