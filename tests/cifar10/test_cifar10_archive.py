"""CIFAR-10 from its archive: format, tfds's order, checksums, one build, atomic and reused.

The archives here are tiny fakes in the real format (``fake_cifar10`` in
conftest.py), served from ``file://`` URLs; the real archive's checksums are
only patched for the test, never weakened in the code.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.cifar10 import array_cache, cifar10_archive
from tests.cifar10.fake_archives import tfds_order, write_cifar10_archive

REPO = pathlib.Path(__file__).resolve().parents[2]


def _entries(cache: pathlib.Path) -> list[str]:
  """Everything in the cache's cifar10 group but lock files."""
  group = cache / "cifar10"
  return sorted(p.name for p in group.iterdir() if not p.name.endswith(".lock")) \
      if group.exists() else []


def _assert_arrays_equal(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_the_real_archive_checksums_are_the_published_ones():
  # The MD5 published by the dataset's authors; size and SHA-256 from tfds's checksums.
  assert cifar10_archive.ARCHIVE == (
      170_052_171, "c32a1d4ab5d03f1284b67883e8d87530",
      "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
  assert cifar10_archive.DEFAULT_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
  assert {n: s.shape for n, s in cifar10_archive.ARRAYS.items()} == {
      "train_images": (50_000, 32, 32, 3), "train_labels": (50_000,),
      "test_images": (10_000, 32, 32, 3), "test_labels": (10_000,)}


def test_a_record_is_a_label_byte_then_the_red_green_and_blue_planes():
  planes = np.stack([np.full((32, 32), c, np.uint8) for c in (10, 20, 30)])
  planes[0, 1, 2] = 99  # Red, row 1, column 2.
  images, labels = cifar10_archive.parse_batches([bytes([7]) + planes.tobytes()] * 2)
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
  assert labels.tolist() == [7, 7] and labels.dtype == np.int32
  np.testing.assert_array_equal(images[0, 0, 0], [10, 20, 30])
  assert images[0, 1, 2, 0] == 99 and images[0, 2, 1, 0] == 10
  with pytest.raises(cifar10_archive.ArchiveError, match="whole number of 3073-byte records"):
    cifar10_archive.parse_batches([b"\0" * 3074])


@pytest.mark.parametrize("split", ["train", "test"])
def test_stored_order_is_tfds_md5_order_of_the_archive_keys(split, tmp_path):
  np.testing.assert_array_equal(cifar10_archive.stored_order(split, 500, tmp_path),
                                tfds_order(split, 500))
  assert not any(tmp_path.iterdir())  # The shuffler spilled nothing to disk.


def test_the_url_is_the_flag_else_the_environment_else_the_default(monkeypatch):
  monkeypatch.delenv(cifar10_archive.URL_ENV, raising=False)
  assert cifar10_archive.resolve_url(None) == cifar10_archive.DEFAULT_URL
  monkeypatch.setenv(cifar10_archive.URL_ENV, "https://mirror.example/c.tar.gz")
  assert cifar10_archive.resolve_url(None) == "https://mirror.example/c.tar.gz"
  assert cifar10_archive.resolve_url("file:///data/c.tar.gz") == "file:///data/c.tar.gz"


def test_first_load_builds_once_in_tfds_order_and_later_loads_reuse_it(fake_cifar10,
                                                                       monkeypatch, capsys):
  arrays = cifar10_archive.load()
  _assert_arrays_equal(arrays, fake_cifar10.stored)
  # Each stored example is the archive example that tfds's order names (pixel 0 = index).
  np.testing.assert_array_equal(arrays["train_images"][:, 0, 0, 0], tfds_order("train", 15))
  assert "fetching" in capsys.readouterr().out
  entry = cifar10_archive.cache_entry()
  assert _entries(fake_cifar10.cache) == [entry.name]
  assert sorted(p.name for p in entry.iterdir()) == [
      "manifest.json", "test_images.npy", "test_labels.npy", "train_images.npy",
      "train_labels.npy"]  # The downloaded archive is not kept.
  assert json.loads((entry / "manifest.json").read_text())["source"] == fake_cifar10.url

  def no_fetch(*args):
    raise AssertionError("fetched again")
  monkeypatch.setattr(cifar10_archive, "fetch", no_fetch)
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  _assert_arrays_equal(cifar10_archive.load(download=False), fake_cifar10.stored)
  assert "fetching" not in capsys.readouterr().out


def test_a_mirror_given_by_url_is_used(fake_cifar10, monkeypatch):
  monkeypatch.setenv(cifar10_archive.URL_ENV, "file:///nonexistent/x.tar.gz")
  _assert_arrays_equal(cifar10_archive.load(fake_cifar10.url), fake_cifar10.stored)


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "too_long"])
def test_a_wrong_archive_is_a_checksum_error_and_leaves_nothing(fake_cifar10, tmp_path, damage):
  data = bytearray(fake_cifar10.path.read_bytes())
  if damage == "flipped_byte":
    data[len(data) // 2] ^= 1
  elif damage == "truncated":
    data = data[:-100]
  else:
    data += b"\0"
  bad = tmp_path / "bad.tar.gz"
  bad.write_bytes(bytes(data))
  with pytest.raises(cifar10_archive.ChecksumError, match="checksum") as error:
    cifar10_archive.load(bad.as_uri())
  assert bad.as_uri() in str(error.value) and "--data-url" in str(error.value)
  assert _entries(fake_cifar10.cache) == []  # Nothing half-written.
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)  # The good one still builds.


def test_an_unreachable_url_says_how_to_use_a_mirror(fake_cifar10):
  with pytest.raises(cifar10_archive.ArchiveError, match="could not download") as error:
    cifar10_archive.load("file:///nonexistent/cifar-10-binary.tar.gz")
  assert "--data-url" in str(error.value) and cifar10_archive.URL_ENV in str(error.value)
  assert _entries(fake_cifar10.cache) == []


def test_no_download_without_a_build_fails_and_says_how(fake_cifar10):
  with pytest.raises(cifar10_archive.ArchiveError, match="--no-download") as error:
    cifar10_archive.load(download=False)
  assert "does not exist" in str(error.value) and "--data-dir" in str(error.value)


def test_an_archive_with_the_right_checksum_but_the_wrong_data_is_refused(fake_cifar10,
                                                                          monkeypatch):
  # E.g. a tfds whose order differs from the one the array checksums come from.
  spec = cifar10_archive.ARRAYS["train_labels"]
  monkeypatch.setattr(cifar10_archive, "ARRAYS", {
      **cifar10_archive.ARRAYS, "train_labels": spec._replace(sha256="0" * 64)})
  with pytest.raises(cifar10_archive.ArchiveError, match="train_labels has SHA-256"):
    cifar10_archive.load()
  assert _entries(fake_cifar10.cache) == []


def test_an_archive_without_a_batch_file_is_refused(fake_cifar10, tmp_path, monkeypatch):
  path = tmp_path / "partial.tar.gz"
  checksum = write_cifar10_archive(path, fake_cifar10.stored, members=["data_batch_1.bin"])
  monkeypatch.setattr(cifar10_archive, "ARCHIVE", checksum)
  with pytest.raises(cifar10_archive.ArchiveError, match="lacks .*data_batch_2.bin"):
    cifar10_archive.load(path.as_uri())
  assert _entries(fake_cifar10.cache) == []


def test_an_interrupted_build_leaves_nothing_and_the_next_run_starts_over(fake_cifar10,
                                                                          monkeypatch):
  def interrupted(archive, scratch):
    assert archive.exists()  # Downloaded, then Ctrl-C while decoding.
    raise KeyboardInterrupt
  with monkeypatch.context() as patch:
    patch.setattr(cifar10_archive, "decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
      cifar10_archive.load()
  assert _entries(fake_cifar10.cache) == []
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)


_KILLED_BUILD = """
import json, pathlib, sys, time
from experiments.cifar10 import cifar10_archive
checksum, specs, ready = json.loads(sys.argv[1])
cifar10_archive.ARCHIVE = cifar10_archive.ArchiveChecksum(*checksum)
cifar10_archive.ARRAYS = {k: cifar10_archive.ArraySpec(tuple(s), d, h)
                          for k, (s, d, h) in specs.items()}
def stuck(archive, scratch):
  pathlib.Path(ready).write_text(str(archive))
  time.sleep(600)
cifar10_archive.decode = stuck
cifar10_archive.load()
"""


def test_a_killed_build_leaves_no_entry_and_the_next_run_cleans_up_and_builds(fake_cifar10,
                                                                              tmp_path):
  ready = tmp_path / "ready"
  specs = {k: (list(s.shape), s.dtype, s.sha256) for k, s in cifar10_archive.ARRAYS.items()}
  process = subprocess.Popen(
      [sys.executable, "-c", _KILLED_BUILD,
       json.dumps([list(cifar10_archive.ARCHIVE), specs, str(ready)])],
      cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 60
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
      time.sleep(0.05)
  finally:
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
  assert ready.exists(), stderr.decode()
  left = _entries(fake_cifar10.cache)
  assert len(left) == 1 and ".tmp-" in left[0]  # A half-done build, never the entry.
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  assert _entries(fake_cifar10.cache) == [cifar10_archive.cache_entry().name]


def test_a_damaged_build_is_detected_and_rebuilt(fake_cifar10, capsys):
  cifar10_archive.load()
  entry = cifar10_archive.cache_entry()
  images = entry / "train_images.npy"
  data = bytearray(images.read_bytes())
  data[-1] ^= 0xFF  # One pixel of the last image.
  images.write_bytes(bytes(data))
  with pytest.raises(cifar10_archive.ArchiveError, match="damaged"):
    cifar10_archive.load(download=False)
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  assert "train_images.npy has SHA-256" in capsys.readouterr().err


def test_an_existing_entry_must_also_match_the_expected_checksums(fake_cifar10, monkeypatch,
                                                                  capsys):
  cifar10_archive.load()
  # A self-consistent entry of other data (e.g. written by a buggy version) is not used.
  entry = cifar10_archive.cache_entry()
  manifest = json.loads((entry / "manifest.json").read_text())
  other = np.zeros(fake_cifar10.stored["test_labels"].shape, np.int32)
  np.save(entry / "test_labels.npy", other)
  manifest["arrays"]["test_labels"]["sha256"] = array_cache.sha256_of(other)
  (entry / "manifest.json").write_text(json.dumps(manifest))
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  assert "rebuilding" in capsys.readouterr().err


def _no_space(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _write_of_the_archive_fails(path, mode="r", *args, **kwargs):
  if "w" in mode:
    _no_space()
  return open(path, mode, *args, **kwargs)


@pytest.mark.parametrize("where, target, replacement, fetches", [
    ("the entry", (array_cache.np, "save"), _no_space, ["PosixPath"]),  # Decoded, not saved.
    ("the staging folder", (array_cache.tempfile, "mkdtemp"), _no_space, ["BytesIO"]),
    ("the download", (cifar10_archive, "open"), _write_of_the_archive_fails,
     ["PosixPath", "BytesIO"]),
])
def test_a_full_disk_while_building_decodes_in_memory_and_leaves_the_cache(
    fake_cifar10, monkeypatch, capsys, where, target, replacement, fetches):
  fetched = []
  fetch = cifar10_archive.fetch

  def counted(url, destination):
    fetched.append(type(destination).__name__)
    return fetch(url, destination)
  with monkeypatch.context() as patch:
    patch.setattr(*target, replacement, raising=False)
    patch.setattr(cifar10_archive, "fetch", counted)
    _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  assert fetched == fetches  # Fetched into the scratch folder, else into memory.
  (line,) = [s for s in capsys.readouterr().err.splitlines() if "warning" in s]
  assert line == (f"warning: the cache entry {cifar10_archive.cache_entry()} cannot be written "
                  f"(No space left on device), so this start decodes CIFAR-10 in memory.")
  assert _entries(fake_cifar10.cache) == []  # Nothing left behind; a later start builds it.
  _assert_arrays_equal(cifar10_archive.load(), fake_cifar10.stored)
  assert _entries(fake_cifar10.cache) == [cifar10_archive.cache_entry().name]


def test_other_write_errors_of_the_cache_are_still_raised(fake_cifar10, monkeypatch):
  def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
  monkeypatch.setattr(array_cache.tempfile, "mkdtemp", denied)
  with pytest.raises(PermissionError):
    cifar10_archive.load()
