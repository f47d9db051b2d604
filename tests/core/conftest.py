"""Strict JAX for the core library's tests.

The library must not rely on implicit dtype promotion or rank broadcasting,
which hide bugs such as a bf16 leaf silently becoming fp32. Optax's own
optimizers do rely on it (``adam``'s bias correction raises a float to an int32
power), so tests that run them mark themselves ``uses_optax_optimizers``; such
tests keep rank promotion strict.
"""

import jax
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
