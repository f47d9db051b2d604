"""Strict JAX for the core library's tests, and the fixtures they share.

The library must not rely on implicit dtype promotion or rank broadcasting,
which hide bugs such as a bf16 leaf silently becoming fp32. Optax's own
optimizers do rely on it (``adam``'s bias correction raises a float to an int32
power), so tests that run them mark themselves ``uses_optax_optimizers``; such
tests keep rank promotion strict.

The test files mirror the modules: ``test_constraints*.py`` tests
``maxnorm_jax/_constraints.py``, ``test_numerics.py`` ``_numerics.py``,
``test_tree_*.py`` ``_tree.py`` (selection, layouts, bounds, resolving),
``test_nnx*.py`` ``nnx.py``, ``test_linen.py`` ``linen.py`` and ``test_haiku.py``
``haiku.py``; ``test_integrations.py`` (jit, optax wrappers, Flax, sharding),
``test_layers.py`` (attention, embeddings and stacks of every library),
``test_properties.py``, ``test_reference_parity.py`` (Keras, torch),
``test_public_api.py`` and ``tests/test_docs.py`` cut across them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "uses_optax_optimizers: runs optax optimizers, which need "
      "standard dtype promotion.")


@pytest.fixture(autouse=True)
def strict_jax(request):
  promotion = ("standard" if request.node.get_closest_marker("uses_optax_optimizers")
               else "strict")
  with jax.numpy_dtype_promotion(promotion), jax.numpy_rank_promotion("raise"):
    yield


# Shared by the tests of several modules.

@pytest.fixture
def kernel_with_norms():
  """Makes a (fan_in, len(norms)) float32 kernel whose column j has norm norms[j]."""

  def make(norms, fan_in=5, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(fan_in, len(norms)))
    w = w / np.linalg.norm(w, axis=0) * np.asarray(norms)
    return jnp.asarray(w, jnp.float32)

  return make


@pytest.fixture
def small_params():
  """A Dense kernel and bias and a Conv kernel, Flax layout, all ones."""
  return {"Dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
          "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))}}


@pytest.fixture
def trace(small_params):
  """Runs ``tx.init`` and a jitted ``tx.update``: the two places errors may surface."""

  def run(tx, params=None):
    params = small_params if params is None else params
    state = tx.init(params)
    return jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)

  return run


@pytest.fixture(params=["cpu", "tpu-gpu"])
def both_lowerings(request, monkeypatch):
  """Runs a test on the CPU lowering and on the one XLA:TPU and XLA:GPU get.

  The library picks its norms' and update's form with ``jax.lax.platform_dependent``;
  here the non-CPU form is made to run on CPU too, so both are tested everywhere.
  """
  if request.param != "cpu":
    monkeypatch.setattr(jax.lax, "platform_dependent",
                        lambda *args, default, **_: default(*args))
  jax.clear_caches()  # no trace of the other lowering may be reused
  yield request.param
  jax.clear_caches()
