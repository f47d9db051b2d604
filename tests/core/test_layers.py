"""Attention, embeddings and stacked layers of each library, after real updates.

Each case builds a real module (Flax NNX, Linen, Equinox, Haiku), its params and the
constraint a user would write for it, and names every TRUE neuron: the axes its norm is
taken over, read off the layer's definition, not off the library under test. An update
of sgd with a large step pushes every weight past the bound; afterwards every true
neuron must sit at the bound (within it, and binding), ``describe`` must report the
same reduced axes, and every leaf that is not constrained must have taken the plain
sgd step. Each case runs under ``jax.jit``, inside ``optax.MultiSteps`` and on params
sharded over 8 simulated devices along a reduced axis (which must equal the unsharded
result). ``nnx.jit`` with ``nnx.Optimizer``, and each NNX layer on its own, are covered
in ``test_nnx_layouts.py``; each Linen layer's layout in ``test_linen.py``.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj

pytestmark = pytest.mark.uses_optax_optimizers

LR = 100.0


class Case(NamedTuple):
  params: object
  constraint: optax.GradientTransformation
  neurons: dict  # path -> (axes reduced over for one true neuron, bound)


def _nnx_stacked_ngpt():
  """nGPT-style: unit norm on the embedding's rows and every neuron of a stack of blocks."""
  nnx = pytest.importorskip("flax.nnx")

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8,
                                              out_features=8, decode=False, rngs=rngs)
      self.mlp = nnx.Linear(8, 16, rngs=rngs)

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(24, 8, rngs=rngs)
      self.blocks = nnx.vmap(Block, in_axes=0, out_axes=0)(rngs.split(3))

  model = Model(nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = mnj.nnx.unit_norm(model, mask=mnj.paths_matching("kernel$", "embedding$"))
  qkv = {f"blocks/attention/{n}/kernel": ((1,), 1.0) for n in ("query", "key", "value")}
  return Case(params, tx, {**qkv, "blocks/attention/out/kernel": ((1, 2), 1.0),
                           "blocks/mlp/kernel": ((1,), 1.0), "embed/embedding": ((1,), 1.0)})


def _linen_scanned_attention():
  """Linen keeps no classes in its params: mnj.linen reads them from an init."""
  nn = pytest.importorskip("flax.linen")

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, name="attn")(x)
      return x + nn.Dense(8, name="mlp")(x), None

  class Model(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      x = nn.Embed(24, 8, name="embed")(tokens)
      stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                      length=3)
      return stack(name="blocks")(x, None)[0]

  tokens = jnp.zeros((1, 4), jnp.int32)
  params = Model().init(jax.random.key(0), tokens)["params"]
  tx = mnj.linen.max_norm(Model(), tokens, 2.0, mask=mnj.paths_matching("kernel$", "embedding$"))
  # (layers, in, heads, dim) for q/k/v, (layers, heads, dim, out) for out, (layers, in, out).
  neurons = {f"blocks/attn/{n}/kernel": ((1,), 2.0) for n in ("query", "key", "value")}
  return Case(params, tx, {**neurons, "blocks/attn/out/kernel": ((1, 2), 2.0),
                           "blocks/mlp/kernel": ((1,), 2.0), "embed/embedding": ((1,), 2.0)})


def _equinox_attention_and_embedding():
  eqx = pytest.importorskip("equinox")

  class Model(eqx.Module):
    embed: eqx.nn.Embedding
    attention: eqx.nn.MultiheadAttention

    def __init__(self, key):
      self.embed = eqx.nn.Embedding(24, 16, key=key)
      self.attention = eqx.nn.MultiheadAttention(num_heads=2, query_size=16, qk_size=4,
                                                 vo_size=4, key=key)

  params = eqx.filter(Model(jax.random.key(0)), eqx.is_array)
  assert params.attention.query_proj.weight.shape == (8, 16)  # (heads * qk_size, in): Linears
  # The table is opt-in: selected by the mask, it is bounded by rows.
  bound = lambda path, leaf: 0.5 if path.startswith("embed/") else 1.0  # noqa: E731
  tx = mnj.max_norm(bound, mask=mnj.paths_matching("weight$"))
  names = ("query_proj", "key_proj", "value_proj", "output_proj")
  return Case(params, tx, {"embed/weight": ((1,), 0.5),
                           **{f"attention/{n}/weight": ((1,), 1.0) for n in names}})


def _haiku_stacked_attention_and_embed():
  hk = pytest.importorskip("haiku")

  def forward(tokens):
    x = hk.Embed(24, 16, name="embed")(tokens)
    attention = lambda x: x + hk.MultiHeadAttention(  # noqa: E731
        num_heads=2, key_size=4, model_size=16, w_init=hk.initializers.VarianceScaling(1.0))(
            x, x, x)
    return hk.layer_stack(3)(attention)(x)

  net = hk.transform(forward)
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = net.init(jax.random.key(0), tokens)
  # Haiku's params are dicts, without classes: mnj.haiku reads them from an init. Its
  # q/k/v/output hk.Linear's w is (layers, in, out); the hk.Embed table by rows.
  tx = mnj.haiku.max_norm(net, tokens, 1.0, mask=mnj.paths_matching("w$", "embeddings$"))
  mha = {f"__layer_stack_no_per_layer/multi_head_attention/{n}/w": ((1,), 1.0)
         for n in ("query", "key", "value", "linear")}
  return Case(params, tx, {**mha, "embed/embeddings": ((1,), 1.0)})


CASES = {  # each built once, for all modes: params and transformations are immutable
    "nnx-stacked-ngpt": functools.cache(_nnx_stacked_ngpt),
    "linen-scanned-attention": functools.cache(_linen_scanned_attention),
    "equinox-attention-embedding": functools.cache(_equinox_attention_and_embedding),
    "haiku-stacked-attention-embed": functools.cache(_haiku_stacked_attention_and_embed),
}


def _by_path(tree):
  return {mnj.path_to_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _grads(params):
  rng = np.random.default_rng(7)  # numpy: no compilation per shape
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)


def _run(tx, params, grads, steps):
  @jax.jit
  def step(params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params


def _sharded(tree, neurons, mesh):
  """Each constrained leaf split over the devices along its first reduced axis."""
  def put(path, x):
    axes = neurons.get(mnj.path_to_str(path), ((),))[0]
    split = next((a for a in axes if x.shape[a] % mesh.size == 0), None)
    spec = [None] * x.ndim
    if split is not None:
      spec[split] = "data"
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))

  return jax.tree_util.tree_map_with_path(put, tree)


@functools.cache
def _unsharded(case, steps):
  """The params after ``steps`` updates under jax.jit (MultiSteps when steps == 2)."""
  params, constraint, _ = CASES[case]()
  tx = optax.chain(optax.sgd(LR), constraint)
  return _run(tx if steps == 1 else optax.MultiSteps(tx, 2), params, _grads(params), steps)


@pytest.mark.parametrize("mode", ["jit", "multisteps", "sharded"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_true_neuron_ends_at_its_bound(case, mode):
  params, constraint, neurons = CASES[case]()
  grads = _grads(params)
  steps = 2 if mode == "multisteps" else 1
  got = _unsharded(case, steps)
  if mode == "sharded":
    if jax.device_count() < 8:
      pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = _sharded(params, neurons, mesh)
    got = _run(optax.chain(optax.sgd(LR), constraint), sharded, _sharded(grads, neurons, mesh),
               steps)
    for path, leaf in _by_path(got).items():
      assert leaf.sharding.is_equivalent_to(_by_path(sharded)[path].sharding, leaf.ndim), path
    for (path, a), b in zip(_by_path(got).items(), _by_path(_unsharded(case, 1)).values()):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=path)

  tx = optax.chain(optax.sgd(LR), constraint)
  plan = {row.path: row.reduced_axes for row in mnj.describe(tx, params)}
  assert plan == {path: reduce for path, (reduce, _) in neurons.items()}
  # MultiSteps with the same gradient twice makes one sgd step with it.
  plain = _by_path(jax.tree.map(lambda p, g: p - LR * g, params, grads))
  for path, leaf in _by_path(got).items():
    if path in neurons:
      reduce, bound = neurons[path]
      norms = np.sqrt(np.sum(np.square(np.asarray(leaf, np.float64)), axis=reduce))
      assert norms.max() <= bound * (1 + 1e-6), path
      np.testing.assert_allclose(norms, bound, rtol=1e-5, err_msg=path)  # all overshot
    else:  # not constrained: the plain sgd step
      np.testing.assert_allclose(leaf, plain[path], rtol=1e-6, atol=1e-6, err_msg=path)
