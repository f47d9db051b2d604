"""Compile-only TPU devices for the tests of this folder.

libtpu (``pip install -e ".[tpu-compile]"``) brings the XLA:TPU compiler; its
compile-only devices need no chip. Where libtpu is not installed, the tests that
need it are skipped with the install command as the reason. CI installs it in a
virtual environment of its own (see ``.ci/run``), because with libtpu installed
every JAX process probes for a TPU.
"""

import pytest

from benchmarks import cost_model


@pytest.fixture(scope="session")
def v5e():
  """``(generation, chip figures, devices)`` of a compile-only TPU v5e 2x2 slice."""
  if cost_model.libtpu_missing():
    pytest.skip(f"libtpu is not installed (compile-only TPU checks): {cost_model.INSTALL}")
  return cost_model.resolve_topology("v5e:2x2")
