"""The array cache: built once, published atomically, checked on every read."""

import json
import os
import shutil
import stat

import numpy as np
import pytest

from experiments.cifar10 import array_cache

ARRAYS = {"images": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
          "labels": np.array([3, 9], np.int32)}


def _build_counting(calls):
  def build(scratch):
    assert scratch.is_dir() and not any(scratch.iterdir())
    (scratch / "download.tmp").write_bytes(b"x" * 10)  # Scratch files are not kept.
    calls.append(scratch)
    return ARRAYS
  return build


def test_the_root_is_the_environment_variable_else_xdg_else_home(monkeypatch, tmp_path):
  monkeypatch.setenv(array_cache.CACHE_DIR_ENV, str(tmp_path / "c"))
  assert array_cache.cache_root() == tmp_path / "c"
  monkeypatch.delenv(array_cache.CACHE_DIR_ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert array_cache.cache_root() == tmp_path / "xdg" / "maxnorm_jax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert array_cache.cache_root() == tmp_path / "home" / ".cache" / "maxnorm_jax"


def test_sha256_depends_on_the_values_not_the_memory_layout():
  a = np.arange(12, dtype=np.int32).reshape(3, 4)
  assert array_cache.sha256_of(np.asfortranarray(a)) == array_cache.sha256_of(a)
  assert array_cache.sha256_of(a.astype(">i4")) == array_cache.sha256_of(a)
  assert array_cache.sha256_of(a + 1) != array_cache.sha256_of(a)


def test_an_entry_is_built_once_and_read_back_checked(tmp_path):
  entry, calls = tmp_path / "group" / "entry", []
  for _ in range(2):
    got = array_cache.load_or_build(entry, _build_counting(calls), about={"source": "here"})
    for name, array in ARRAYS.items():
      np.testing.assert_array_equal(got[name], array)
      assert got[name].dtype == array.dtype
  assert len(calls) == 1
  assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "labels.npy",
                                                     "manifest.json"]
  manifest = json.loads((entry / "manifest.json").read_text())
  assert manifest["source"] == "here"
  assert manifest["arrays"]["labels"] == {
      "shape": [2], "dtype": "int32", "sha256": array_cache.sha256_of(ARRAYS["labels"])}
  assert sorted(p.name for p in entry.parent.iterdir()) == [".entry.lock", "entry"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_a_damaged_entry_is_detected_then_rebuilt(tmp_path, damage, capsys):
  entry, calls = tmp_path / "entry", []
  array_cache.load_or_build(entry, _build_counting(calls))
  path = entry / "images.npy"
  if damage == "flip":
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
  elif damage == "truncate":
    path.write_bytes(path.read_bytes()[:-5])
  elif damage == "delete":
    path.unlink()
  else:
    (entry / "manifest.json").write_text("{")
  with pytest.raises(array_cache.DamagedEntryError):
    array_cache.read_entry(entry)
  array_cache.load_or_build(entry, _build_counting(calls))
  assert len(calls) == 2 and "rebuilding" in capsys.readouterr().err
  array_cache.read_entry(entry)  # Whole again.


def test_an_entry_must_match_the_expected_checksums(tmp_path):
  entry = tmp_path / "entry"
  array_cache.load_or_build(entry, _build_counting([]))
  expected = {name: array_cache.sha256_of(a) for name, a in ARRAYS.items()}
  array_cache.read_entry(entry, expected)
  with pytest.raises(array_cache.DamagedEntryError, match="labels.npy has SHA-256"):
    array_cache.read_entry(entry, {**expected, "labels": "0" * 64})
  with pytest.raises(array_cache.DamagedEntryError, match="expected"):
    array_cache.read_entry(entry, {"images": expected["images"]})


def test_a_failed_build_leaves_nothing_and_stale_builds_are_swept(tmp_path):
  entry = tmp_path / "entry"
  stale = tmp_path / ".entry.tmp-killed"  # What a killed build leaves.
  stale.mkdir()
  (stale / "images.npy").write_bytes(b"half")

  def failing(scratch):
    (scratch / "partial").write_bytes(b"x")
    raise ValueError("bad data")
  with pytest.raises(ValueError, match="bad data"):
    array_cache.load_or_build(entry, failing)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock"]


@pytest.mark.parametrize("replacement", ["file", "dangling symlink", "symlink to a file"])
def test_an_entry_replaced_by_a_file_or_symlink_is_rebuilt(tmp_path, replacement, capsys):
  entry, calls = tmp_path / "entry", []
  array_cache.load_or_build(entry, _build_counting(calls))
  shutil.rmtree(entry)
  if replacement == "file":
    entry.write_text("not an entry")
  elif replacement == "dangling symlink":
    entry.symlink_to(tmp_path / "nowhere")
  else:
    (tmp_path / "a_file").write_text("x")
    entry.symlink_to(tmp_path / "a_file")
  got = array_cache.load_or_build(entry, _build_counting(calls))
  np.testing.assert_array_equal(got["labels"], ARRAYS["labels"])
  assert len(calls) == 2 and entry.is_dir() and not entry.is_symlink()
  if replacement == "symlink to a file":
    assert (tmp_path / "a_file").read_text() == "x"  # The link went, not its target.


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_entries_get_the_modes_the_umask_allows(tmp_path, umask):
  old = os.umask(umask)
  try:
    array_cache.load_or_build(tmp_path / "entry", _build_counting([]))
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / "entry").stat().st_mode) == 0o777 & ~umask
  for path in (tmp_path / "entry").iterdir():
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
