"""mnj.haiku: every param's neurons read from the Haiku module that makes it.

The updates themselves (every true neuron at its bound under jax.jit, optax.MultiSteps
and sharding) are checked in test_layers.py; here, which axes are read, and what is
refused. That the default layouts are each layer's true neurons is checked on the
layers' outputs in test_tree_layouts.py.
"""

import jax
import jax.numpy as jnp
import pytest

import maxnorm_jax as mnj

hk = pytest.importorskip("haiku")


def _reduced(tx, net, *args):
  params = jax.eval_shape(net.init, jax.random.key(0), *args)
  return {row.path: row.reduced_axes for row in mnj.describe(tx, params)}


@pytest.mark.parametrize(("layer", "shape", "reduced"), [
    (lambda: hk.Linear(6, name="layer"), (2, 8), (0,)),
    (lambda: hk.Conv2D(5, 3, name="layer"), (1, 6, 6, 2), (0, 1, 2)),
    (lambda: hk.Conv1D(6, 3, feature_group_count=2, name="layer"), (1, 6, 4), (0, 1)),
    # (kh, kw, out, in): the outputs are on axis -2.
    (lambda: hk.Conv2DTranspose(5, 3, name="layer"), (1, 6, 6, 2), (0, 1, 3)),
], ids=["Linear", "Conv2D", "Conv1D(groups)", "Conv2DTranspose"])
def test_weight_layouts(layer, shape, reduced):
  net = hk.transform(lambda x: layer()(x))
  x = jnp.ones(shape)
  assert _reduced(mnj.haiku.max_norm(net, x, 1.0), net, x) == {"layer/w": reduced}


def test_attention_embed_and_stacks():
  def forward(tokens):
    x = hk.Embed(20, 8, name="embed")(tokens)
    attention = lambda x: x + hk.MultiHeadAttention(  # noqa: E731
        num_heads=2, key_size=4, model_size=8, w_init=hk.initializers.VarianceScaling(1.0))(
            x, x, x)
    x = hk.layer_stack(3)(attention)(x)
    x = hk.layer_stack(2, name="mlp")(lambda x: x + hk.Linear(8, name="linear")(x))(x)
    return hk.Linear(5, name="linear")(x)  # the same name as the stacked one inside "mlp"

  net = hk.transform(forward)
  tokens = jnp.zeros((1, 4), jnp.int32)
  stacked = {f"__layer_stack_no_per_layer/multi_head_attention/{n}/w": (1,)
             for n in ("query", "key", "value", "linear")}
  weights = {**stacked, "mlp/linear/w": (1,), "linear/w": (0,)}
  assert _reduced(mnj.haiku.max_norm(net, tokens), net, tokens) == weights  # no table
  tx = mnj.haiku.unit_norm(net, tokens, mask=mnj.paths_matching("w$", "embeddings$"))
  assert _reduced(tx, net, tokens) == {**weights, "embed/embeddings": (1,)}  # by rows


def test_unknown_layouts_are_refused_naming_the_leaf_and_class():
  class Custom(hk.Module):
    def __call__(self, x):
      w = hk.get_parameter("w", (x.shape[-1], 4), init=jnp.ones)
      return hk.Linear(4, name="dense")(x) + x @ w

  net = hk.transform(lambda x: Custom(name="custom")(x))
  x = jnp.ones((2, 3))
  assert _reduced(mnj.haiku.max_norm(net, x), net, x) == {"custom/dense/w": (0,)}
  with pytest.raises(ValueError, match=r"mnj\.haiku\.max_norm: the mask selects 'custom/w' of "
                     r"shape \(3, 4\), the 'w' of a Custom.*mask=.*neuron_axis="):
    mnj.haiku.max_norm(net, x, mask=mnj.paths_matching("w$"))
  with pytest.raises(ValueError, match=r"'custom/dense/b'.*Linear"):
    mnj.haiku.min_max_norm(net, x, mask=mnj.paths_matching("dense/b$"))
  with pytest.raises(TypeError, match=r"hk\.transform"):
    mnj.haiku.max_norm(lambda x: x, x)


def test_transform_with_state_and_init_kwargs():
  def forward(x, *, scale):
    hk.set_state("count", jnp.zeros(()))
    return hk.Linear(4, name="dense")(x * scale)

  net = hk.transform_with_state(forward)
  x = jnp.ones((2, 3))
  tx = mnj.haiku.max_norm(net, x, 1.0, kwargs={"scale": 2.0})
  params, _ = net.init(jax.random.key(0), x, scale=2.0)
  assert {row.path: row.reduced_axes for row in mnj.describe(tx, params)} == {
      "dense/w": (0,)}
