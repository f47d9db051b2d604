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
import pathlib  # noqa: E402

import pytest  # noqa: E402


def pytest_report_header(config):
  import maxnorm_jax  # noqa: PLC0415 -- after the environment set-up above

  return f"maxnorm_jax {maxnorm_jax.__version__} from {pathlib.Path(maxnorm_jax.__file__).parent}"


def pytest_sessionstart(session):
  """With MAXNORM_TEST_INSTALLED=1 (CI's runs against the wheel), refuse to test any
  maxnorm_jax but an installed one: a source tree on sys.path would shadow the wheel."""
  if os.environ.get("MAXNORM_TEST_INSTALLED") == "1":
    import maxnorm_jax  # noqa: PLC0415

    where = pathlib.Path(maxnorm_jax.__file__).resolve()
    if "site-packages" not in where.parts:
      raise pytest.UsageError(f"MAXNORM_TEST_INSTALLED=1, but maxnorm_jax comes from {where}")


@pytest.fixture(scope="session", autouse=True)
def _offline_data(tmp_path_factory):
  """No test writes to the user's data cache or reaches the network: the cache is a
  temporary directory, and CIFAR-10's archive URL points at a file that does not
  exist (tests that need an archive build a tiny one)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("MAXNORM_CACHE_DIR", str(tmp_path_factory.mktemp("maxnorm_cache")))
    patch.setenv("MAXNORM_CIFAR10_URL", "file:///nonexistent/cifar-10-binary.tar.gz")
    yield


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


@pytest.fixture
def tiny():
  """Config overrides for a tiny network on the mock data, for tests of the plumbing
  (tests/cifar10/test_models.py checks the article's architecture). With the 300 fake
  examples per split of ``mock_cifar10``: train 240 = 7 full batches of 32 and a partial
  one of 16."""
  return dict(conv_features=4, dense_features=16, batch_size=32, val_size=60,
              train_subset=None, eval_subset=None, eval_batch_size=50)


class FakeSource:
  """A tfds-like random-access source of ``n`` random CIFAR-shaped examples."""

  def __init__(self, n, seed=0):
    import numpy as np  # noqa: PLC0415 -- keep the module's imports to the environment set-up

    rng = np.random.default_rng(seed)
    self.images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    self.labels = rng.integers(0, 10, n).astype(np.int32)

  def __len__(self):
    return len(self.labels)

  def __getitems__(self, indices):
    return [{"image": self.images[i], "label": self.labels[i]} for i in indices]


@pytest.fixture(scope="session")
def fake_source():
  """``fake_source(n, seed=0)``: a :class:`FakeSource` of ``n`` random examples."""
  return FakeSource
