"""Fixtures of the CIFAR-10 data tests."""

import pathlib
from typing import NamedTuple

import numpy as np
import pytest

from experiments.cifar10 import cifar10_archive
from tests.cifar10.fake_archives import array_specs, in_tfds_order, write_cifar10_archive


class FakeCifar10(NamedTuple):
  """A tiny archive in the real format, and what it must decode to.

  Attributes:
    path: the archive file.
    url: its ``file://`` URL (also ``$MAXNORM_CIFAR10_URL`` during the test).
    stored: the arrays it decodes to, in tfds's order.
    cache: the test's cache root (``$MAXNORM_CACHE_DIR``).
  """
  path: pathlib.Path
  url: str
  stored: dict
  cache: pathlib.Path


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
  """A :class:`FakeCifar10` of 15 training and 4 test examples. ``cifar10_archive``'s
  expected checksums (``ARCHIVE``, ``ARRAYS``) are patched to the fake's for the test;
  every image's first pixel holds its index in the archive, for tests of the order."""
  rng = np.random.default_rng(0)
  archive_arrays = {}
  for split, n in (("train", 15), ("test", 4)):
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    archive_arrays[f"{split}_images"] = images
    archive_arrays[f"{split}_labels"] = rng.integers(0, 10, n).astype(np.int32)
  path = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
  path.parent.mkdir()
  checksum = write_cifar10_archive(path, archive_arrays)
  stored = in_tfds_order(archive_arrays)
  monkeypatch.setattr(cifar10_archive, "ARCHIVE", checksum)
  monkeypatch.setattr(cifar10_archive, "ARRAYS", array_specs(stored))
  monkeypatch.setenv("MAXNORM_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("MAXNORM_CIFAR10_URL", path.as_uri())
  return FakeCifar10(path, path.as_uri(), stored, tmp_path / "cache")
