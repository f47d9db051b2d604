"""maxnorm_jax/_tree.py: ``axis=`` and ``neuron_axis=`` given per leaf.

Attention q/k/v kernels ``(in, heads, head_dim)``, embedding tables
``(vocab, features)`` and stacked ``(layers, in, out)`` kernels each get their
true neurons from a per-leaf layout; each check measures those neurons with
numpy after one update.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj

C = 1.0


def _weights(shape, seed, reduced=(1,)):
  """Weights whose neurons, in any layout, range from well inside to well outside C."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=shape)
  for a, n in enumerate(shape):  # a different scale along every axis
    w = w * np.expand_dims(rng.uniform(0.15, 1.0, size=n), tuple(i for i in range(len(shape))
                                                                  if i != a))
  return jnp.asarray(w / np.median(np.sqrt((w ** 2).sum(axis=reduced))), jnp.float32)


def _params():
  return {
      "attn": {"query": {"kernel": _weights((32, 4, 16), 0, (0,))},
               "out": {"kernel": _weights((4, 16, 32), 1, (0, 1))}},
      "embed": {"embedding": _weights((100, 16), 2)},
      "stack": {"kernel": _weights((4, 8, 6), 3)},
  }


# The true neurons of each leaf, as the axes their norms reduce over.
TRUE_REDUCED = {
    "attn/query/kernel": (0,),      # one neuron per (head, dim); fan-in: the inputs
    "attn/out/kernel": (0, 1),      # the default: one neuron per output
    "embed/embedding": (1,),        # one neuron per row (token)
    "stack/kernel": (1,),           # one neuron per (layer, output)
}
AXIS = {"attn": {"query": {"kernel": 0}, "out": None},   # None: the default layout
        "embed": 1, "stack": 1}


def _norms(w, reduced):
  return np.sqrt((np.asarray(w, np.float64) ** 2).sum(axis=reduced))


def _by_path(tree):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {mnj.path_to_str(p): x for p, x in flat}


def _check_true_neurons(before, after, bound):
  """Every true neuron ends within its bound; those outside end on it; the rest are kept."""
  before, after = _by_path(before), _by_path(after)
  for path, reduced in TRUE_REDUCED.items():
    c = bound(path)
    n0, n1 = _norms(before[path], reduced), _norms(after[path], reduced)
    assert (n0 > c * 1.01).any() and (n0 < c * 0.99).any(), path  # the test can fail
    assert n1.max() <= c * (1 + 1e-5), (path, n1.max())
    np.testing.assert_allclose(n1[n0 > c], c, rtol=1e-5, err_msg=path)
    inside = np.expand_dims(n0 <= c, reduced)
    np.testing.assert_array_equal(
        np.where(inside, np.asarray(after[path]), 0), np.where(inside, np.asarray(before[path]), 0))


def _step(tx, params):
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  return optax.apply_updates(params, updates)


def test_per_leaf_axis_gives_attention_embedding_and_stack_their_true_neurons():
  params = _params()
  after = _step(optax.chain(optax.sgd(0.1), mnj.max_norm(C, axis=AXIS)), params)
  _check_true_neurons(params, after, lambda path: C)


def test_the_default_layout_does_not_give_them_their_true_neurons():
  """What the per-leaf layout fixes: by default the bound misses the true neurons."""
  params = _params()
  after = _by_path(_step(mnj.max_norm(C), params))
  for path in ("attn/query/kernel", "embed/embedding", "stack/kernel"):
    largest = _norms(after[path], TRUE_REDUCED[path]).max()
    assert abs(largest - C) > 0.05, (path, largest)


def test_per_leaf_neuron_axis_tuple_and_callable_agree_with_per_leaf_axis():
  params = _params()
  expected = _step(mnj.max_norm(C, axis=AXIS), params)
  neuron_axis = {"attn": {"query": {"kernel": (1, 2)}, "out": None}, "embed": 0,
                 "stack": (0, -1)}

  def by_path(path, w):
    return {"attn/query/kernel": 0, "embed/embedding": 1, "stack/kernel": (1,)}.get(path)

  for tx in (mnj.max_norm(C, neuron_axis=neuron_axis), mnj.max_norm(C, axis=by_path)):
    got = _step(tx, params)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stacked_kernel_by_layer_matches_each_layer_on_its_own():
  w = _weights((4, 8, 6), 3)
  stacked = mnj.project_max_norm({"k": w}, C, neuron_axis=(0, -1))["k"]
  for layer in range(4):
    alone = mnj.project_max_norm({"k": w[layer]}, C)["k"]
    np.testing.assert_allclose(np.asarray(stacked[layer]), np.asarray(alone), rtol=1e-6)
  norms = mnj.neuron_norms({"k": stacked}, neuron_axis=(0, 2))["k"]
  assert norms.shape == (4, 6)
  np.testing.assert_allclose(np.asarray(norms), _norms(stacked, (1,)), rtol=1e-6)


def test_per_leaf_axis_with_per_leaf_bounds():
  params = _params()
  bounds = {"attn/query/kernel": 0.6, "attn/out/kernel": 1.3, "embed/embedding": 0.8,
            "stack/kernel": 1.1}
  tx = optax.chain(optax.sgd(0.1),
                   mnj.max_norm(lambda path, w: bounds[path], axis=AXIS))
  after = _step(tx, params)
  _check_true_neurons(params, after, bounds.__getitem__)


@pytest.mark.uses_optax_optimizers
def test_per_leaf_axis_inside_multisteps_and_with_inject_hyperparams():
  params = _params()
  for tx in (optax.MultiSteps(optax.chain(optax.sgd(0.1), mnj.max_norm(C, axis=AXIS)),
                              every_k_schedule=1),
             optax.inject_hyperparams(mnj.max_norm, static_args=("axis",))(
                 max_value=C, axis=AXIS)):
    _check_true_neurons(params, _step(tx, params), lambda path: C)


@pytest.mark.parametrize("make", [mnj.unit_norm, lambda **kw: mnj.min_max_norm(0.9, 1.0, **kw)])
def test_unit_norm_and_min_max_norm_take_per_leaf_layouts(make):
  params = _params()
  after = _by_path(_step(make(axis=AXIS), params))
  for path, reduced in TRUE_REDUCED.items():
    n = _norms(after[path], reduced)
    assert n.max() <= 1 + 1e-5 and n.min() >= 0.9 - 1e-5, path


def test_neuron_norms_takes_per_leaf_layouts():
  norms = _by_path(mnj.neuron_norms(_params(), axis=AXIS))
  params = _by_path(_params())
  for path, reduced in TRUE_REDUCED.items():
    np.testing.assert_allclose(np.asarray(norms[path]), _norms(params[path], reduced),
                               rtol=1e-6)


# ---------------------------------------------------------------- bad input


def _raises(match, **layout):
  for run in (lambda: mnj.max_norm(C, **layout).init(_params()),
              lambda: mnj.project_max_norm(_params(), C, **layout),
              lambda: mnj.neuron_norms(_params(), **layout)):
    with pytest.raises((ValueError, TypeError), match=match):
      run()


def test_per_leaf_axis_out_of_range_names_the_leaf():
  _raises(r"axis 3 is out of range for leaf 'stack/kernel' of shape \(4, 8, 6\)",
          axis={**AXIS, "stack": 3})
  _raises(r"neuron_axis=\(0, 3\) is out of range for leaf 'stack/kernel'",
          neuron_axis={**AXIS, "stack": (0, 3)})


def test_per_leaf_axis_repeated_names_the_leaf():
  _raises(r"axis \(1, -2\) names the same axis twice for leaf 'stack/kernel'",
          axis={**AXIS, "stack": (1, -2)})
  _raises(r"neuron_axis=\(0, -3\) names the same axis twice for leaf 'stack/kernel'",
          neuron_axis={**AXIS, "stack": (0, -3)})


def test_per_leaf_axis_over_every_axis_names_the_leaf():
  _raises(r"axis \(0, 1, 2\) reduces over every axis of leaf 'stack/kernel'.*no axis is "
          "left to index its neurons", axis={**AXIS, "stack": (0, 1, 2)})
  _raises(r"leaf 'embed/embedding' of shape \(100, 16\).*no axis left",
          neuron_axis={"attn": None, "embed": (0, 1), "stack": None})


@pytest.mark.parametrize("value", ["0", 1.5, True, (0, None), ()])
def test_per_leaf_axis_of_bad_form_names_the_leaf(value):
  _raises(r"axis.*for leaf 'embed/embedding'", axis={**AXIS, "embed": value})
  _raises(r"axis.*for leaf 'embed/embedding'",
          axis=lambda path, w: value if path == "embed/embedding" else None)


def test_callable_axis_that_raises_names_the_leaf():
  def axis(path, w):
    return {"embed/embedding": 1}[path]

  _raises(r"the axis callable raised for leaf 'attn/out/kernel' of shape \(4, 16, 32\): "
          "KeyError", axis=axis)
  with pytest.raises(ValueError, match="callable raised") as info:
    mnj.max_norm(C, axis=axis).init(_params())
  assert isinstance(info.value.__cause__, KeyError)


def test_per_leaf_axis_that_does_not_fit_the_params():
  _raises(r"axis does not match the params", axis={"attn": 0, "embed": 1})


def test_per_leaf_axis_errors_surface_under_jit():
  params = _params()
  tx = mnj.max_norm(C, axis={**AXIS, "stack": 5})
  with pytest.raises(ValueError, match="leaf 'stack/kernel'"):
    jax.jit(tx.update)(params, optax.EmptyState(), params)


def test_static_neuron_axis_tuple_is_refused_where_it_covers_the_leaf(trace):
  with pytest.raises(ValueError, match=r"leaf 'Dense_0/kernel' of shape \(4, 3\).*no axis left"):
    trace(mnj.max_norm(C, neuron_axis=(0, 1)))


def test_per_leaf_settings_inside_optax_masked_with_a_prefix_mask():
  """optax.masked hands the inner init a tree with whole subtrees masked out."""
  params = _params()
  bounds = {"attn": 0.6, "embed": 0.8, "stack": 2.0}
  tx = optax.masked(mnj.max_norm(bounds, axis=AXIS), {"attn": True, "embed": True,
                                                      "stack": False})
  after = _by_path(_step(tx, params))
  before = _by_path(params)
  for path in ("attn/query/kernel", "attn/out/kernel", "embed/embedding"):
    n = _norms(after[path], TRUE_REDUCED[path])
    np.testing.assert_allclose(n.max(), bounds[path.partition("/")[0]], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(after["stack/kernel"]),
                                np.asarray(before["stack/kernel"]))
  with pytest.raises(ValueError, match="axis does not match the params"):
    optax.masked(mnj.max_norm(C, axis={"attn": {"query": 0}, "embed": 1}),
                 {"attn": True, "embed": True, "stack": False}).init(params)
