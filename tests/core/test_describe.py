"""maxnorm_jax/_describe.py: the plan of the constraints inside any Optax transformation."""

import jax
import jax.numpy as jnp
import optax
import pytest

import maxnorm_jax as mnj
from maxnorm_jax import _describe


def _params():
  return {
      "attn": {"query": {"kernel": jnp.ones((32, 4, 16))},
               "out": {"kernel": jnp.ones((4, 16, 32)), "bias": jnp.ones(32)}},
      "embed": {"embedding": jnp.ones((100, 16))},
      "layers": {"kernel": jnp.ones((4, 8, 6))},
  }


NEURON_AXIS = {"attn": {"query": {"kernel": (1, 2)}, "out": None}, "embed": 0,
               "layers": (0, -1)}


def _as_tuples(plan):
  return [(r.transformation, r.path, r.shape, r.neuron_axes, r.reduced_axes, r.neurons,
           r.bound) for r in plan.rows]


@pytest.mark.uses_optax_optimizers
def test_chain_one_row_per_selected_leaf():
  bounds = {"attn": 2.0, "embed": 1.0, "layers": 3.0}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3),
                   mnj.max_norm(bounds, neuron_axis=NEURON_AXIS))
  plan = mnj.describe(tx, _params())
  assert _as_tuples(plan) == [
      ("max_norm", "attn/out/kernel", (4, 16, 32), (2,), (0, 1), 32, 2.0),
      ("max_norm", "attn/query/kernel", (32, 4, 16), (1, 2), (0,), 64, 2.0),
      ("max_norm", "embed/embedding", (100, 16), (0,), (1,), 100, 1.0),
      ("max_norm", "layers/kernel", (4, 8, 6), (0, 2), (1,), 24, 3.0),
  ]
  assert len(plan) == 4 and list(plan) == list(plan.rows)
  text = str(plan)
  assert repr(plan) == text
  lines = text.splitlines()
  assert lines[0].split() == ["transformation", "path", "shape", "neuron", "axes", "reduced",
                              "axes", "neurons", "bound"]
  assert lines[2].split() == ["max_norm", "attn/query/kernel", "(32,", "4,", "16)", "1,", "2",
                              "0", "64", "2"]
  assert mnj.describe(tx, _params()).rows == plan.rows  # again: not lost to jax's caches


@pytest.mark.uses_optax_optimizers
def test_wrappers_nested_chains_and_every_constraint():
  params = _params()
  inner = optax.chain(
      optax.masked(mnj.unit_norm(neuron_axis=NEURON_AXIS),  # a prefix of the params...
                   {"attn": False, "embed": True, "layers": False}),  # ...and of the mask
      optax.chain(mnj.min_max_norm(0.5, 2.0, 0.5,
                                   mask=mnj.paths_matching("layers"))),
      optax.inject_hyperparams(mnj.max_norm, static_args=("mask",))(
          max_value=3.0, mask=mnj.paths_matching("attn/query")),
      mnj.non_neg(mask=mnj.paths_matching("attn/out/bias")),
  )
  tx = optax.MultiSteps(optax.chain(optax.sgd(0.1), inner), every_k_schedule=2)
  assert _as_tuples(mnj.describe(tx, params)) == [
      ("unit_norm", "embed/embedding", (100, 16), (0,), (1,), 100, "= 1"),
      ("min_max_norm", "layers/kernel", (4, 8, 6), (2,), (0, 1), 6, "[0.5, 2], rate 0.5"),
      ("max_norm", "attn/query/kernel", (32, 4, 16), (2,), (0, 1), 16, "injected"),
      ("non_neg", "attn/out/bias", (32,), (0,), (), 32, ">= 0"),
  ]


def test_abstract_params_and_nothing_allocated():
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _params())
  plan = mnj.describe(mnj.max_norm(1.0, neuron_axis=NEURON_AXIS), shapes)
  assert [r.neurons for r in plan] == [32, 64, 100, 24]


def test_no_constraint():
  plan = mnj.describe(optax.sgd(0.1), _params())
  assert plan.rows == ()
  assert str(plan) == "No leaf is selected by a maxnorm_jax constraint."


def test_errors_of_init_are_raised_and_the_recorder_is_off_after():
  tx = mnj.max_norm(1.0, axis={"attn": 0, "embed": 1, "layers": (0, 1, 2)})
  with pytest.raises(ValueError, match="reduces over every axis of leaf 'layers/kernel'"):
    mnj.describe(tx, _params())
  assert _describe._RECORDER.get() is None
  mnj.describe(mnj.max_norm(1.0), _params())
  assert _describe._RECORDER.get() is None
