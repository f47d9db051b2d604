"""Test-wide set-up: several simulated CPU devices and Keras on JAX.

Both must be set before JAX or Keras is imported, so they live here, the first
file pytest loads.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()


import functools  # noqa: E402 -- after the environment set-up above

import pytest  # noqa: E402


@pytest.fixture
def mock_cifar10(monkeypatch):
  """tfds.testing.mock_data: tfds's real data_source code path, random examples."""
  import tensorflow_datasets as tfds  # noqa: PLC0415 -- only the tests that need it
  from tensorflow_datasets.testing import mocking  # noqa: PLC0415

  # tfds 4.9.10's mock binds `_getitems` without `self`, so the batched
  # `__getitems__` read raises TypeError; `self` is unused for decoded examples.
  monkeypatch.setattr(mocking, "_getitems", functools.partial(mocking._getitems, None))
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE):
    yield
