"""Parity with the references: Keras 3's constraints and ``torch.renorm``.

Keras (on its JAX backend) is the reference for the formulas; it scales every
neuron by ``desired / (norm + 1e-7)``, so agreement is to 1e-5 relative on
ordinary inputs. ``torch.renorm`` is the reference for "only neurons over the
bound change".
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maxnorm_jax as mnj

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
  pytest.skip("Keras must run on its JAX backend (KERAS_BACKEND=jax)",
              allow_module_level=True)

# Flax/Keras kernel layouts, output last: Dense, Conv1D, Conv2D, Conv3D.
SHAPES = {"dense": (20, 8), "conv1d": (3, 4, 8), "conv2d": (3, 3, 4, 8),
          "conv3d": (2, 2, 2, 3, 8)}


def _kernel(shape, seed=0):
  """Neurons with norms spread over [0.2, 8] so every bound is hit from both sides."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=shape)
  flat = w.reshape(-1, shape[-1])
  flat = flat / np.linalg.norm(flat, axis=0) * np.geomspace(0.2, 8.0, shape[-1])
  return jnp.asarray(flat.reshape(shape), jnp.float32)


def _keras(constraint, w):
  with jax.numpy_dtype_promotion("standard"):
    return np.asarray(constraint(w))


def _via_transformation(tx, w, seed=1):
  """``params + updates`` after ``tx``, for params and updates summing to ``w``."""
  params = {"k": jnp.asarray(np.random.default_rng(seed).normal(size=w.shape) * 0.1,
                             jnp.float32)}
  updates = {"k": w - params["k"]}
  new, _ = jax.jit(tx.update)(updates, tx.init(params), params)
  return np.asarray(optax.apply_updates(params, new)["k"])


CASES = [
    ("max_norm", lambda ax: keras.constraints.MaxNorm(3.0, axis=ax),
     lambda: mnj.max_norm(3.0), lambda p: mnj.project_max_norm(p, 3.0)),
    ("min_max_norm", lambda ax: keras.constraints.MinMaxNorm(0.5, 2.0, rate=0.7, axis=ax),
     lambda: mnj.min_max_norm(0.5, 2.0, 0.7),
     lambda p: mnj.project_min_max_norm(p, 0.5, 2.0, 0.7)),
    ("unit_norm", lambda ax: keras.constraints.UnitNorm(axis=ax),
     lambda: mnj.unit_norm(), lambda p: mnj.project_unit_norm(p)),
    ("non_neg", lambda ax: keras.constraints.NonNeg(),
     lambda: mnj.non_neg(), lambda p: mnj.project_non_neg(p)),
]


@pytest.mark.parametrize("layer", SHAPES)
@pytest.mark.parametrize("name,keras_constraint,transformation,projection", CASES,
                         ids=[c[0] for c in CASES])
def test_matches_keras(layer, name, keras_constraint, transformation, projection):
  shape = SHAPES[layer]
  w = _kernel(shape)
  if name == "non_neg":
    w = w - jnp.mean(w)  # plenty of negative entries
  # Keras reduces over the given axes; ours, by default, over all but the last.
  expected = _keras(keras_constraint(list(range(len(shape) - 1))), w)
  np.testing.assert_allclose(np.asarray(projection({"k": w})["k"]), expected,
                             rtol=1e-5, atol=1e-7)
  with jax.numpy_dtype_promotion("standard"):
    got = _via_transformation(transformation(), w)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_explicit_axis_matches_keras_default_axis_zero():
  w = _kernel(SHAPES["conv2d"]) * 3
  expected = _keras(keras.constraints.MaxNorm(2.0), w)  # Keras's default axis=0
  got = np.asarray(mnj.project_max_norm({"k": w}, 2.0, axis=0)["k"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", SHAPES)
def test_only_neurons_over_the_bound_change_like_torch_renorm(layer):
  torch = pytest.importorskip("torch")
  shape = SHAPES[layer]
  w = _kernel(shape, seed=3)
  # torch.renorm bounds the norm of each slice along `dim`: the output axis.
  expected = torch.renorm(torch.from_numpy(np.array(w)), p=2, dim=len(shape) - 1,
                          maxnorm=3.0).numpy()
  got = np.asarray(mnj.project_max_norm({"k": w}, 3.0)["k"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  norms = np.linalg.norm(np.asarray(w).reshape(-1, shape[-1]), axis=0)
  inside = norms <= 3.0
  assert 0 < inside.sum() < inside.size
  # Both leave the neurons inside the ball exactly as they were.
  np.testing.assert_array_equal(got[..., inside], np.asarray(w)[..., inside])
  np.testing.assert_array_equal(expected[..., inside], np.asarray(w)[..., inside])


@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv_transpose2d"])
def test_equinox_layout_matches_torch_renorm_and_keras_on_the_other_axes(layer):
  """Equinox keeps PyTorch's (out, in, ...) layout, where renorm's idiom is dim=0."""
  eqx = pytest.importorskip("equinox")
  torch = pytest.importorskip("torch")
  key = jax.random.key(0)
  module = {"linear": lambda: eqx.nn.Linear(20, 8, key=key),
            "conv2d": lambda: eqx.nn.Conv2d(4, 8, 3, key=key),
            "conv_transpose2d": lambda: eqx.nn.ConvTranspose2d(4, 8, 3, key=key)}[layer]()
  rng = np.random.default_rng(4)
  w = module.weight * jnp.asarray(rng.uniform(1.0, 40.0, size=(8,) + (1,) * (module.weight.ndim
                                                                            - 1)), jnp.float32)
  params = eqx.filter(eqx.tree_at(lambda m: m.weight, module, w), eqx.is_array)
  got = np.asarray(mnj.project_max_norm(params, 3.0).weight)
  expected = torch.renorm(torch.from_numpy(np.array(w)), p=2, dim=0, maxnorm=3.0).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  keras_axes = list(range(1, w.ndim))
  np.testing.assert_allclose(got, _keras(keras.constraints.MaxNorm(3.0, axis=keras_axes), w),
                             rtol=1e-5, atol=1e-7)
  norms = np.linalg.norm(np.asarray(w).reshape(8, -1), axis=1)
  assert 0 < (norms <= 3.0).sum() < 8
