"""maxnorm_jax/_tree.py, layouts: where a kernel's neurons are, in Flax, Haiku and Equinox.

Each layout claim is checked against the real library: a slice is a neuron
when zeroing it changes exactly one output unit (and leaves the others alone).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj

C = 0.5


def _rows(w):
  """Norms of the neurons of a neuron-first (out, ...) weight, in float64."""
  w = np.asarray(w, np.float64)
  return np.linalg.norm(w.reshape(w.shape[0], -1), axis=1)


def _cols(w):
  """Norms of the neurons of a neuron-last (..., out) kernel, in float64."""
  w = np.asarray(w, np.float64)
  return np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0)


def _step(tx, params, scale=1.0):
  """One update that pushes every weight up by ``scale``, then apply_updates."""
  grads = jax.tree.map(lambda x: jnp.full_like(x, -scale), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return optax.apply_updates(params, updates)


def _only_unit_changes(outputs_before, outputs_after, unit, axis):
  """Zeroing neuron ``unit`` changed output channel ``unit`` and no other."""
  changed = np.any(np.asarray(outputs_before) != np.asarray(outputs_after),
                   axis=tuple(a for a in range(np.ndim(outputs_before)) if a != axis))
  return changed.tolist() == [i == unit for i in range(changed.size)]


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (3, 4, 8), (2, 2, 2, 3, 8)])
def test_conv_kernels_have_neurons_on_the_last_axis(shape):
  w = jnp.asarray(np.random.default_rng(0).normal(size=shape) * 3, jnp.float32)
  projected = mnj.project_max_norm({"k": w}, 1.0)["k"]
  norms = _cols(projected)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
  np.testing.assert_allclose(mnj.neuron_norms({"k": projected})["k"], norms, rtol=1e-6)


def test_explicit_axis_has_keras_meaning():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 4, 8)) * 3, jnp.float32)
  projected = mnj.project_max_norm({"k": w}, 1.0, axis=(0, 1))["k"]
  norms = np.sqrt((np.asarray(projected, np.float64) ** 2).sum(axis=(0, 1)))
  assert norms.shape == (4, 8)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
  assert mnj.neuron_norms({"k": w}, axis=-1)["k"].shape == (3, 3, 4)


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 3), (8, 2, 3, 3), (5, 2, 2, 2, 3)])
@pytest.mark.parametrize("neuron_axis", [0, 1, -1])
def test_neuron_axis_is_keras_axis_over_every_other_axis(shape, neuron_axis):
  w = jnp.asarray(np.random.default_rng(1).normal(size=shape) * 3, jnp.float32)
  others = tuple(a for a in range(len(shape)) if a != neuron_axis % len(shape))
  tx_a, tx_b = mnj.max_norm(C, neuron_axis=neuron_axis), mnj.max_norm(C, axis=others)
  zeros = {"k": jnp.zeros_like(w)}
  a, _ = tx_a.update({"k": w}, tx_a.init(zeros), zeros)
  b, _ = tx_b.update({"k": w}, tx_b.init(zeros), zeros)
  np.testing.assert_array_equal(np.asarray(a["k"]), np.asarray(b["k"]))
  assert mnj.neuron_norms({"k": w}, neuron_axis=neuron_axis)["k"].shape == (
      shape[neuron_axis],)
  np.testing.assert_array_equal(
      np.asarray(mnj.project_max_norm({"k": w}, C, neuron_axis=neuron_axis)["k"]),
      np.asarray(mnj.project_max_norm({"k": w}, C, axis=others)["k"]))


def test_neuron_axis_minus_one_is_the_default():
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 4, 8)) * 3, jnp.float32)
  np.testing.assert_array_equal(np.asarray(mnj.project_max_norm({"k": w}, C)["k"]),
                                np.asarray(mnj.project_max_norm({"k": w}, C, neuron_axis=-1)["k"]))


def test_axis_out_of_range_names_the_leaf(trace):
  with pytest.raises(ValueError, match=r"axis 2 is out of range for leaf 'Dense_0/kernel' "
                     r"of shape \(4, 3\)"):
    trace(mnj.max_norm(3.0, axis=2))
  with pytest.raises(ValueError, match=r"neuron_axis=2 is out of range for leaf "
                     r"'Dense_0/kernel' of shape \(4, 3\)"):
    trace(mnj.max_norm(3.0, neuron_axis=2))


@pytest.mark.parametrize("axis", [(), (0, 0), "0", 1.0, (0, None)])
def test_axis_of_bad_form(trace, axis):
  with pytest.raises((ValueError, TypeError), match="axis"):
    trace(mnj.max_norm(3.0, axis=axis))


@pytest.mark.parametrize("neuron_axis", [(0, None), "0", 1.0, True])
def test_neuron_axis_of_bad_form(neuron_axis):
  with pytest.raises(TypeError, match="neuron_axis must be an int"):
    mnj.max_norm(3.0, neuron_axis=neuron_axis)


def test_axis_and_neuron_axis_together_are_refused():
  for make in (lambda: mnj.max_norm(3.0, axis=0, neuron_axis=1),
               lambda: mnj.neuron_norms({}, axis=0, neuron_axis=1),
               lambda: mnj.project_unit_norm({}, axis=0, neuron_axis=1)):
    with pytest.raises(ValueError, match="not both"):
      make()


def test_axis_naming_one_axis_twice_via_negative_index(trace):
  with pytest.raises(ValueError, match="names the same axis twice for leaf 'Dense_0/kernel'"):
    trace(mnj.max_norm(3.0, axis=(1, -1)))


def test_rank_one_leaf_selected_with_default_axis_names_the_leaf(trace):
  with pytest.raises(ValueError, match="leaf 'Dense_0/bias' has shape \\(3,\\)"):
    trace(mnj.max_norm(3.0, mask=mnj.paths_matching("bias$")))
  with pytest.raises(ValueError, match="leaf 'Dense_0/bias' of shape \\(3,\\).*no axis left"):
    trace(mnj.max_norm(3.0, neuron_axis=0, mask=mnj.paths_matching("bias$")))


def test_traced_axis_from_inject_hyperparams_is_explained():
  with pytest.raises(TypeError, match=r"static_args=\('axis',\)"):
    mnj.max_norm(3.0, axis=jnp.asarray(0))
  with pytest.raises(TypeError, match=r"static_args=\('neuron_axis',\)"):
    mnj.max_norm(3.0, neuron_axis=jnp.asarray(0))


# ---------------------------------------------------------------- Equinox


def _eqx_layers():
  eqx = pytest.importorskip("equinox")
  key = jax.random.key(0)
  return {
      "Linear": (eqx.nn.Linear(12, 6, key=key), (12,)),
      "Conv1d": (eqx.nn.Conv1d(3, 6, 3, key=key), (3, 7)),
      "Conv2d": (eqx.nn.Conv2d(3, 6, (3, 2), key=key), (3, 7, 7)),
      "Conv3d": (eqx.nn.Conv3d(2, 6, 2, key=key), (2, 4, 4, 4)),
      "Conv2d(groups=2)": (eqx.nn.Conv2d(4, 6, 3, groups=2, key=key), (4, 6, 6)),
      "ConvTranspose1d": (eqx.nn.ConvTranspose1d(3, 6, 3, key=key), (3, 5)),
      "ConvTranspose2d": (eqx.nn.ConvTranspose2d(3, 6, (3, 2), stride=2, key=key), (3, 5, 5)),
      "ConvTranspose3d": (eqx.nn.ConvTranspose3d(2, 6, 2, key=key), (2, 3, 3, 3)),
  }


@pytest.mark.parametrize("name", ["Linear", "Conv1d", "Conv2d", "Conv3d", "Conv2d(groups=2)",
                                  "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"])
def test_equinox_weight_rows_are_neurons(name):
  """What the default relies on, checked on the real layer: row o is output o."""
  eqx = pytest.importorskip("equinox")
  layer, in_shape = _eqx_layers()[name]
  x = jax.random.normal(jax.random.key(1), in_shape)
  assert layer.weight.shape[0] == 6
  unit = 4
  zeroed = eqx.tree_at(lambda m: m.weight, layer, layer.weight.at[unit].set(0.0))
  assert _only_unit_changes(layer(x), zeroed(x), unit, 0)  # Equinox: channels first


@pytest.mark.parametrize("name", ["Linear", "Conv1d", "Conv2d", "Conv3d", "Conv2d(groups=2)",
                                  "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"])
def test_equinox_one_liner_constrains_the_true_neurons(name):
  """The issue's example: eqx.filter(m, eqx.is_array), then max_norm, no option."""
  eqx = pytest.importorskip("equinox")
  layer, _ = _eqx_layers()[name]
  params = eqx.filter(layer, eqx.is_array)
  new = _step(optax.chain(optax.sgd(1.0), mnj.max_norm(C)), params)
  assert np.all(_rows(new.weight) <= C * (1 + 1e-6))
  np.testing.assert_allclose(_rows(new.weight), C, rtol=1e-6)  # all were pushed past C
  assert not np.allclose(_cols(new.weight.reshape(6, -1)), C, rtol=1e-3)
  # The (out, 1, ..., 1) bias of a convolution is a bias, not a kernel.
  np.testing.assert_array_equal(np.asarray(new.bias), np.asarray(params.bias) + 1.0)
  np.testing.assert_allclose(np.asarray(mnj.neuron_norms(new).weight), _rows(new.weight),
                             rtol=1e-6)
  assert mnj.neuron_norms(new).bias is None
  # The pure function agrees, and so does an explicit neuron_axis=0.
  moved = jax.tree.map(lambda x: x + 1.0, params)
  np.testing.assert_allclose(np.asarray(mnj.project_max_norm(moved, C).weight),
                             np.asarray(new.weight), rtol=1e-6)
  explicit = _step(optax.chain(optax.sgd(1.0), mnj.max_norm(C, neuron_axis=0)), params)
  np.testing.assert_array_equal(np.asarray(explicit.weight), np.asarray(new.weight))


def test_equinox_nested_model_and_unknown_layouts():
  eqx = pytest.importorskip("equinox")

  class Model(eqx.Module):
    mlp: eqx.nn.MLP
    embed: eqx.nn.Embedding
    raw: jax.Array

    def __init__(self, key):
      k1, k2 = jax.random.split(key)
      self.mlp = eqx.nn.MLP(5, 3, 16, depth=2, key=k1)
      self.embed = eqx.nn.Embedding(10, 4, key=k2)
      self.raw = jnp.ones((4, 7))

  params = eqx.filter(Model(jax.random.key(0)), eqx.is_array)
  # The Embedding's table is opt-in: the default mask leaves it out, as it does biases.
  plan = mnj.describe(mnj.max_norm(C, mask=mnj.paths_matching("weight$")), params)
  assert {row.path: row.reduced_axes for row in plan} == {
      "mlp/layers/0/weight": (1,), "mlp/layers/1/weight": (1,), "mlp/layers/2/weight": (1,),
      "embed/weight": (1,)}  # selected, by rows
  raw_by_columns = mnj.max_norm(C, neuron_axis=lambda path, leaf: 1 if path == "raw" else None)
  assert {row.path for row in mnj.describe(raw_by_columns, params)} == {
      "mlp/layers/0/weight", "mlp/layers/1/weight", "mlp/layers/2/weight", "raw"}
  with pytest.raises(ValueError, match=r"leaf 'raw' of shape \(4, 7\).*Equinox Model.*"
                     r"Linear, Conv and ConvTranspose.*Embedding \(rows\).*neuron_axis="):
    mnj.max_norm(C).init(params)
  with pytest.raises(ValueError, match=r"leaf 'mlp/layers/0/bias' .* is in an Equinox Linear, "
                     "and only the `weight`"):
    mnj.max_norm(C, mask=mnj.paths_matching("^mlp/")).init(params)
  mlp_only = mnj.max_norm(C, mask=mnj.paths_matching("^mlp/.*weight$"))
  new = _step(optax.chain(optax.sgd(1.0), mlp_only), params)
  for layer in new.mlp.layers:
    np.testing.assert_allclose(_rows(layer.weight), C, rtol=1e-6)
  with pytest.raises(ValueError, match=r"leaf 'raw' of shape \(4, 7\).* is in an Equinox Model"):
    mnj.neuron_norms(params, mask=mnj.paths_matching("^raw$"))
  assert mnj.neuron_norms(params, neuron_axis=1, mask=mnj.paths_matching("^raw$")).raw.shape == (
      7,)


# ---------------------------------------------------------------- Haiku


def test_haiku_defaults_are_right():
  hk = pytest.importorskip("haiku")

  def forward(x):
    h = jax.nn.relu(hk.Conv2D(6, (3, 2), name="conv")(x))
    return hk.Linear(5, name="linear")(h.reshape(h.shape[0], -1))

  net = hk.without_apply_rng(hk.transform(forward))
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  params = net.init(jax.random.key(0), x)
  assert params["linear"]["w"].shape == (96, 5)       # (in, out)
  assert params["conv"]["w"].shape == (3, 2, 3, 6)     # (kh, kw, in, out)
  unit = 2
  for layer, out_axis, out_of in (("linear", -1, lambda p: net.apply(p, x)),
                                  ("conv", -1, lambda p: hk.transform(
                                      lambda x: hk.Conv2D(6, (3, 2), name="conv")(x)
                                  ).apply({"conv": p["conv"]}, None, x))):
    zeroed = jax.tree.map(lambda w: w, params)
    zeroed[layer] = dict(zeroed[layer], w=params[layer]["w"].at[..., unit].set(0.0))
    before, after = out_of(params), out_of(zeroed)
    assert _only_unit_changes(before, after, unit, np.ndim(before) + out_axis), layer
  new = _step(optax.chain(optax.sgd(1.0), mnj.max_norm(C)), params)
  for layer in ("linear", "conv"):
    np.testing.assert_allclose(_cols(new[layer]["w"]), C, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new[layer]["b"]),
                                  np.asarray(params[layer]["b"]) + 1.0)


def test_haiku_conv_transpose_keeps_outputs_second_to_last():
  """hk.Conv2DTranspose's w is (kh, kw, out, in): neuron_axis=-2 says so."""
  hk = pytest.importorskip("haiku")
  net = hk.without_apply_rng(hk.transform(lambda x: hk.Conv2DTranspose(6, 3, name="up")(x)))
  x = jax.random.normal(jax.random.key(1), (1, 4, 4, 3))
  params = net.init(jax.random.key(0), x)
  assert params["up"]["w"].shape == (3, 3, 6, 3)
  unit = 1
  zeroed = {"up": dict(params["up"], w=params["up"]["w"].at[:, :, unit, :].set(0.0))}
  assert _only_unit_changes(net.apply(params, x), net.apply(zeroed, x), unit, 3)
  new = _step(optax.chain(optax.sgd(1.0), mnj.max_norm(C, neuron_axis=-2)), params)
  w = np.moveaxis(np.asarray(new["up"]["w"], np.float64), -2, -1)
  np.testing.assert_allclose(_cols(w), C, rtol=1e-6)
