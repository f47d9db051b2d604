"""mnj.linen: every param's neurons read from the Linen module that makes it.

The updates themselves (every true neuron at its bound under jax.jit, optax.MultiSteps
and sharding) are checked in test_layers.py; here, which axes are read, and what is
refused.
"""

import jax
import jax.numpy as jnp
import pytest

import maxnorm_jax as mnj

nn = pytest.importorskip("flax.linen")


def _reduced(tx, module, *args):
  params = jax.eval_shape(module.init, jax.random.key(0), *args)["params"]
  return {row.path: row.reduced_axes for row in mnj.describe(tx, params)}


@pytest.mark.parametrize(("make", "shape", "reduced"), [
    (lambda: nn.Dense(6), (2, 8), {"kernel": (0,)}),
    # DenseGeneral: (*batch, *inputs, *features); inputs are reduced over.
    (lambda: nn.DenseGeneral((4, 2), axis=(-2, -1)), (2, 3, 5), {"kernel": (0, 1)}),
    (lambda: nn.DenseGeneral(4, axis=-1, batch_dims=(0,)), (3, 2, 5), {"kernel": (1,)}),
    (lambda: nn.Conv(5, (3, 3)), (1, 6, 6, 2), {"kernel": (0, 1, 2)}),
    (lambda: nn.Conv(6, (3,), feature_group_count=2), (1, 6, 4), {"kernel": (0, 1)}),
    (lambda: nn.ConvTranspose(5, (3, 3)), (1, 6, 6, 2), {"kernel": (0, 1, 2)}),
    # transpose_kernel: (*window, out, in), so the neurons are on axis -2.
    (lambda: nn.ConvTranspose(5, (3, 3), transpose_kernel=True), (1, 6, 6, 2),
     {"kernel": (0, 1, 3)}),
    (lambda: nn.Einsum((8, 2, 4), "btd,dhk->bthk"), (1, 3, 8), {"kernel": (0,)}),
    (lambda: nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8), (1, 3, 8),
     {"query/kernel": (0,), "key/kernel": (0,), "value/kernel": (0,),
      "out/kernel": (0, 1)}),
], ids=["Dense", "DenseGeneral", "DenseGeneral(batch_dims)", "Conv", "Conv(groups)",
        "ConvTranspose", "ConvTranspose(transpose_kernel)", "Einsum", "attention"])
def test_kernel_layouts(make, shape, reduced):
  x = jnp.ones(shape)
  assert _reduced(mnj.linen.max_norm(make(), x, 1.0), make(), x) == reduced


def test_embed_by_rows_only_when_opted_in():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      return nn.Dense(3)(nn.Embed(20, 6)(tokens))

  tokens = jnp.zeros((2, 4), jnp.int32)
  assert _reduced(mnj.linen.unit_norm(Model(), tokens), Model(), tokens) == {
      "Dense_0/kernel": (0,)}
  tx = mnj.linen.unit_norm(Model(), tokens, mask=mnj.paths_matching("kernel$", "embedding$"))
  assert _reduced(tx, Model(), tokens) == {"Dense_0/kernel": (0,), "Embed_0/embedding": (1,)}


def test_stacks_by_scan_and_vmap_keep_their_layer_axes():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      return nn.Dense(8, name="dense")(x), None

  x = jnp.ones((2, 8))
  scanned = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)()
  assert _reduced(mnj.linen.max_norm(scanned, (x, None)), scanned, x, None) == {
      "dense/kernel": (1,)}
  mapped = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=None, axis_size=3)(8)
  assert _reduced(mnj.linen.max_norm(mapped, x), mapped, x) == {"kernel": (1,)}
  misplaced = nn.vmap(nn.Dense, variable_axes={"params": 1}, split_rngs={"params": True},
                      in_axes=None, axis_size=3)(6)
  with pytest.raises(ValueError, match=r"'kernel' of a Dense has shape \(8, 3, 6\), which does "
                     r"not end in the \(8, 6\).*variable_axes=\{'params': 0\}"):
    mnj.linen.max_norm(misplaced, x)


def test_unknown_layouts_are_refused_naming_the_leaf_and_class():
  class Custom(nn.Module):
    @nn.compact
    def __call__(self, x):
      w = self.param("w", nn.initializers.ones, (x.shape[-1], 4))
      return nn.Dense(4, name="dense")(x) + x @ w

  x = jnp.ones((2, 3))
  assert _reduced(mnj.linen.max_norm(Custom(), x), Custom(), x) == {"dense/kernel": (0,)}
  with pytest.raises(ValueError, match=r"mnj\.linen\.max_norm: the mask selects 'w' of shape "
                     r"\(3, 4\), the 'w' of a Custom.*mask=.*neuron_axis="):
    mnj.linen.max_norm(Custom(), x, mask=mnj.paths_matching("w$", "kernel$"))
  with pytest.raises(ValueError, match=r"'dense/bias'.*Dense"):
    mnj.linen.max_norm(Custom(), x, mask=lambda p: jax.tree.map(lambda _: True, p))
  with pytest.raises(ValueError, match=r"'kernel'.*Einsum.*equation.*mask="):
    mnj.linen.max_norm(nn.Einsum((3, 4), "...d,dk->...k"), x)
  with pytest.raises(TypeError, match="flax.linen Module"):
    mnj.linen.max_norm(lambda x: x, x)


def test_init_kwargs_and_boxed_params():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x, *, scale):
      kernel_init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, "model"))
      return nn.Dense(4, kernel_init=kernel_init)(x * scale)

  x = jnp.ones((2, 3))
  tx = mnj.linen.max_norm(Model(), x, 1.0, kwargs={"scale": 2.0})
  boxed = Model().init(jax.random.key(0), x, scale=2.0)["params"]  # nn.Partitioned leaves
  assert {row.path: row.reduced_axes for row in mnj.describe(tx, boxed)} == {
      "Dense_0/kernel": (0,)}
