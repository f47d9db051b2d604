"""mnj.nnx.max_norm: every Param's neurons read from the NNX module that owns it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj

nnx = pytest.importorskip("flax.nnx")
pytestmark = pytest.mark.uses_optax_optimizers


def _step(model, mask=None):
  """One nnx.jit step of sgd(big lr) then mnj.nnx.max_norm(model, 1.0): every neuron overshoots."""
  tx = optax.chain(optax.sgd(100.0), mnj.nnx.max_norm(model, 1.0, mask=mask))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(3), len(jax.tree.leaves(state))))
  grads = jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape, p.dtype), state)
  nnx.jit(lambda opt, m, g: opt.update(m, g))(optimizer, model, grads)
  return tx


def _plan(tx, model):
  """describe's rows by path: (shape, neuron axes, reduced axes)."""
  lines = str(mnj.describe(tx, nnx.state(model, nnx.Param))).splitlines()[1:]
  rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
  return {row[1]: tuple(row[2:5]) for row in rows}


def _assert_at_bound(kernel, reduce):
  """Every TRUE neuron (norm over ``reduce``) ends within 1 and at it (all overshot)."""
  norms = np.sqrt(np.sum(np.square(np.asarray(kernel, np.float64)), axis=reduce))
  assert norms.max() <= 1.0 + 1e-6
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_linear():
  model = nnx.Linear(8, 6, rngs=nnx.Rngs(0))
  _step(model)
  _assert_at_bound(model.kernel[...], (0,))
  assert np.abs(model.bias[...]).max() > 1.0  # the bias is not selected


def test_linear_general_reduces_over_its_input_axes():
  model = nnx.LinearGeneral((4, 3), (5, 2), axis=(-2, -1), rngs=nnx.Rngs(0))
  assert model.kernel.shape == (4, 3, 5, 2)
  _step(model)
  _assert_at_bound(model.kernel[...], (0, 1))


def test_multi_head_attention_per_head_and_dim():
  model = nnx.MultiHeadAttention(num_heads=4, in_features=16, qkv_features=32, decode=False,
                                 rngs=nnx.Rngs(0))
  tx = _step(model)
  for name in ("query", "key", "value"):
    kernel = getattr(model, name).kernel[...]
    assert kernel.shape == (16, 4, 8)
    _assert_at_bound(kernel, (0,))
  _assert_at_bound(model.out.kernel[...], (0, 1))
  plan = _plan(tx, model)
  assert plan["query/kernel"] == ("(16, 4, 8)", "1, 2", "0")
  assert plan["out/kernel"] == ("(4, 8, 16)", "2", "0, 1")


def test_einsum_from_its_equation():
  model = nnx.Einsum("btd,dhk->bthk", (8, 2, 4), rngs=nnx.Rngs(0))
  _step(model)
  _assert_at_bound(model.kernel[...], (0,))


def test_einsum_that_cannot_be_read_is_refused():
  model = nnx.Einsum("...d,dk->...k", (8, 4), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"'kernel'.*Einsum.*equation.*mask="):
    mnj.nnx.max_norm(model, 1.0)


def test_conv():
  model = nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(0))
  _step(model)
  _assert_at_bound(model.kernel[...], (0, 1, 2))


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose(transpose_kernel):
  model = nnx.ConvTranspose(3, 5, (3, 3), transpose_kernel=transpose_kernel, rngs=nnx.Rngs(0))
  _step(model)
  # Flax's kernel: (*window, in, out), or (*window, out, in) with transpose_kernel.
  _assert_at_bound(model.kernel[...], (0, 1, 3) if transpose_kernel else (0, 1, 2))


def test_embed_by_rows_only_when_opted_in():
  model = nnx.Embed(20, 6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="selects no parameter"):
    mnj.nnx.max_norm(model, 1.0)  # embeddings are opt-in
  tx = _step(model, mask=mnj.paths_matching("embedding"))
  _assert_at_bound(model.embedding[...], (1,))
  assert _plan(tx, model) == {"embedding": ("(20, 6)", "0", "1")}


def test_vmap_stack_per_layer():
  stack = nnx.vmap(lambda rngs: nnx.Linear(8, 8, rngs=rngs), in_axes=0, out_axes=0)(
      nnx.Rngs(0).split(4))
  assert stack.kernel.shape == (4, 8, 8)
  tx = _step(stack)
  _assert_at_bound(stack.kernel[...], (1,))
  assert _plan(tx, stack) == {"kernel": ("(4, 8, 8)", "0, 2", "1")}


def test_vmap_stacked_attention_per_layer():
  @nnx.split_rngs(splits=2)
  @nnx.vmap(in_axes=0, out_axes=0)
  def make(rngs):
    return nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                  rngs=rngs)

  model = make(nnx.Rngs(0))
  assert model.query.kernel.shape == (2, 8, 2, 4)
  _step(model)
  _assert_at_bound(model.query.kernel[...], (1,))
  _assert_at_bound(model.out.kernel[...], (1, 2))


class Custom(nnx.Module):
  def __init__(self, rngs):
    self.w = nnx.Param(jnp.ones((4, 4)))
    self.dense = nnx.Linear(4, 4, rngs=rngs)


def test_unknown_module_selected_by_the_mask_is_refused():
  model = Custom(nnx.Rngs(0))
  _step(model)  # by default, only the Linear's kernel
  _assert_at_bound(model.dense.kernel[...], (0,))
  with pytest.raises(ValueError, match=r"'w'.*Custom.*mask=.*neuron_axis="):
    mnj.nnx.max_norm(model, 1.0, mask=mnj.paths_matching("w$", "kernel$"))
  with pytest.raises(ValueError, match=r"'dense/bias'.*Linear"):
    mnj.nnx.max_norm(model, 1.0, mask=lambda p: jax.tree.map(lambda _: True, p))


def test_constraints_from_a_declaring_layer_stacked_by_vmap():
  stack = nnx.vmap(
      lambda rngs: nnx.Linear(4, 8, kernel_metadata={"max_norm": 0.5}, rngs=rngs),
      in_axes=0, out_axes=0)(nnx.Rngs(0).split(3))
  assert stack.kernel.shape == (3, 4, 8)
  tx = optax.chain(optax.sgd(100.0), mnj.nnx.constraints_from(stack))
  optimizer = nnx.Optimizer(stack, tx, wrt=nnx.Param)
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype),
                       nnx.state(stack, nnx.Param))
  nnx.jit(lambda opt, m, g: opt.update(m, g))(optimizer, stack, grads)
  norms = np.sqrt(np.sum(np.square(np.asarray(stack.kernel[...], np.float64)), axis=1))
  np.testing.assert_allclose(norms, 0.5, rtol=1e-5)  # per layer and output, not jointly
  assert _plan(tx, stack) == {"kernel": ("(3, 4, 8)", "0, 2", "1")}


def test_stack_axis_that_does_not_lead_is_refused():
  stack = nnx.vmap(lambda rngs: nnx.Linear(8, 6, rngs=rngs), in_axes=0, out_axes=1)(
      nnx.Rngs(0).split(3))
  assert stack.kernel.shape == (8, 3, 6)
  with pytest.raises(ValueError, match=r"'kernel'.*\(8, 3, 6\).*\(8, 6\).*out_axes=0"):
    mnj.nnx.max_norm(stack, 1.0)


def test_per_leaf_bound_inside_multisteps_under_jax_jit():
  model = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                 rngs=nnx.Rngs(0))
  bound = lambda path, leaf: 0.5 if path.startswith("out") else 2.0  # noqa: E731
  tx = optax.MultiSteps(optax.chain(optax.sgd(100.0), mnj.nnx.max_norm(model, bound)), 2)
  graphdef, params = nnx.split(model, nnx.Param)
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(2), p.shape, p.dtype), params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(2):
    params, state = step(params, state)
  model = nnx.merge(graphdef, params)
  for name in ("query", "key", "value"):
    norms = np.linalg.norm(np.asarray(getattr(model, name).kernel[...]), axis=0)
    np.testing.assert_allclose(norms, 2.0, rtol=1e-5)
  np.testing.assert_allclose(
      np.sqrt(np.sum(np.square(np.asarray(model.out.kernel[...])), axis=(0, 1))), 0.5, rtol=1e-5)


def test_stack_sharded_over_the_reduced_axis_agrees_with_unsharded():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  stack = nnx.vmap(lambda rngs: nnx.Linear(8, 16, rngs=rngs), in_axes=0, out_axes=0)(
      nnx.Rngs(0).split(2))
  tx = optax.chain(optax.sgd(100.0), mnj.nnx.max_norm(stack, 1.0))
  params = nnx.to_pure_dict(nnx.state(stack, nnx.Param))
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(4), p.shape, p.dtype), params)

  @jax.jit
  def step(params):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)

  expected = step(params)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = dict(params, kernel=jax.device_put(params["kernel"],
                                               NamedSharding(mesh, P(None, "data", None))))
  got = step(sharded)
  assert got["kernel"].sharding.spec == P(None, "data")
  np.testing.assert_allclose(got["kernel"], expected["kernel"], rtol=1e-5, atol=1e-6)
  _assert_at_bound(got["kernel"], (1,))


def test_scan_stack_per_layer():
  @nnx.split_rngs(splits=3)
  @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
  def make(carry, rngs):
    return carry, nnx.Linear(8, 6, rngs=rngs)

  _, stack = make(jnp.zeros(()), nnx.Rngs(0))
  assert stack.kernel.shape == (3, 8, 6)
  _step(stack)
  _assert_at_bound(stack.kernel[...], (1,))


@pytest.mark.parametrize("name", ["max_norm", "min_max_norm", "unit_norm"])
def test_each_norm_constraint_reads_the_same_layouts(name):
  model = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                 rngs=nnx.Rngs(0))
  make = getattr(mnj.nnx, name)
  tx = make(model, mask=mnj.paths_matching("kernel$"))
  assert _plan(tx, model)["query/kernel"] == ("(8, 2, 4)", "1, 2", "0")
  with pytest.raises(ValueError, match=rf"mnj\.nnx\.{name}: .*'query/bias'.*LinearGeneral"):
    make(model, mask=mnj.paths_matching("query/bias$"))


def test_min_max_norm_lifts_and_caps_true_neurons():
  model = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False,
                                 rngs=nnx.Rngs(0))
  tx = mnj.nnx.min_max_norm(model, 2.0, 3.0)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  shrunk = jax.tree.map(lambda x: x * 1e-3, params)  # every neuron below 2
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(shrunk), shrunk)
  new = optax.apply_updates(shrunk, updates)
  norms = np.linalg.norm(np.asarray(new["query"]["kernel"], np.float64), axis=0)
  np.testing.assert_allclose(norms, 2.0, rtol=1e-5)  # per head and dim, lifted to 2
