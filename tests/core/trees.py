"""Tree comparisons for the tests."""

import jax
import numpy as np


def assert_trees_all_equal(a, b):
  """Leaves equal bit for bit (same dtype, same bits), trees equal in structure."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype, (x.dtype, y.dtype)
    np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


def assert_trees_all_close(a, b, rtol=1e-6, atol=0.0):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=rtol, atol=atol)
