"""Checksummed directories of numpy arrays, built once and published atomically.

An entry is a directory ``<root>/<group>/<name>/`` with one ``.npy`` file per
array and a ``manifest.json`` that records each array's shape, dtype and
SHA-256. :func:`load_or_build` returns an entry's arrays, building the entry
first when it is missing:

- The build runs under an exclusive lock (``fcntl.flock`` on
  ``.<name>.lock`` beside the entry), so concurrent processes on one host build
  once; the kernel drops the lock when its holder dies.
- The build writes into a hidden temporary directory beside the entry and
  renames it into place only when every array is written and synced, so the
  entry is either absent or complete. Temporary directories that a killed
  build left behind are deleted by the next build, under the lock.
- Every load hashes every array against the manifest (and against the
  caller's expected checksums, when given); a damaged entry (a file, or a
  symlink to nothing, in its place included) is reported, then rebuilt, never
  used. Loaded arrays are read-only memory maps of the entry.
- Entries get the modes that the umask gives new files and directories, so a
  cache shared between users works as the umask intends.

The cache root is ``$MAXNORM_CACHE_DIR``, else ``$XDG_CACHE_HOME/maxnorm_jax``,
else ``~/.cache/maxnorm_jax``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping

import numpy as np

__all__ = ["CACHE_DIR_ENV", "DamagedEntryError", "cache_root", "load_or_build", "read_entry",
           "sha256_of"]

CACHE_DIR_ENV = "MAXNORM_CACHE_DIR"
_MANIFEST = "manifest.json"
_FORMAT = 1  # The entry layout's version, recorded in every manifest.

Arrays = dict[str, np.ndarray]


class DamagedEntryError(RuntimeError):
  """A cache entry is incomplete, unreadable, or does not match its checksums."""


def cache_root() -> pathlib.Path:
  """The directory that holds every cache entry (it may not exist yet)."""
  if os.environ.get(CACHE_DIR_ENV):
    return pathlib.Path(os.environ[CACHE_DIR_ENV]).expanduser()
  if os.environ.get("XDG_CACHE_HOME"):
    return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "maxnorm_jax"
  return pathlib.Path.home() / ".cache" / "maxnorm_jax"


def sha256_of(array: np.ndarray) -> str:
  """SHA-256 of an array's values: its bytes in C order, little-endian."""
  data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
  return hashlib.sha256(data.data.cast("B")).hexdigest()


def read_entry(entry: pathlib.Path, expected: Mapping[str, str] | None = None) -> Arrays:
  """The arrays of ``entry``, each checked against the manifest's SHA-256 and, if
  given, against ``expected`` (array name to SHA-256).

  Raises:
    DamagedEntryError: a file is missing or unreadable, or a checksum differs.
  """
  try:
    manifest = json.loads((entry / _MANIFEST).read_text())
    if manifest.get("format") != _FORMAT:
      raise DamagedEntryError(f"{entry}: manifest format {manifest.get('format')!r}, "
                              f"expected {_FORMAT}")
    specs = manifest["arrays"]
    if expected is not None and set(expected) != set(specs):
      raise DamagedEntryError(f"{entry} holds arrays {sorted(specs)}, expected "
                              f"{sorted(expected)}")
    arrays = {}
    for name, spec in specs.items():
      # Mapped read-only, not copied: hashing reads it once, and the caller's
      # own copy of the rows it needs is the only other pass. Entries are never
      # written in place (a rebuild renames a new directory over), so the
      # mapped bytes stay the ones just checked.
      array = np.asarray(np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False))
      if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
        raise DamagedEntryError(f"{entry}/{name}.npy is {array.dtype}{list(array.shape)}, "
                                f"the manifest says {spec['dtype']}{spec['shape']}")
      digest = sha256_of(array)
      want = spec["sha256"] if expected is None else expected[name]
      if digest != spec["sha256"] or digest != want:
        raise DamagedEntryError(f"{entry}/{name}.npy has SHA-256 {digest}, expected {want}")
      arrays[name] = array
    return arrays
  except (OSError, ValueError, KeyError, TypeError) as e:  # Missing, truncated, not JSON.
    raise DamagedEntryError(f"{entry} cannot be read: {type(e).__name__}: {e}") from e


def _write_entry(directory: pathlib.Path, arrays: Mapping[str, np.ndarray],
                 about: Mapping[str, object]) -> None:
  """Writes ``arrays`` and their manifest into ``directory`` and syncs them to disk."""
  specs = {}
  for name, array in arrays.items():
    path = directory / f"{name}.npy"
    with open(path, "wb") as f:
      np.save(f, array, allow_pickle=False)
      f.flush()
      os.fsync(f.fileno())
    specs[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                   "sha256": sha256_of(array)}
  with open(directory / _MANIFEST, "w") as f:
    json.dump({"format": _FORMAT, "arrays": specs, **about}, f, indent=2)
    f.flush()
    os.fsync(f.fileno())


def _remove(path: pathlib.Path) -> None:
  """Removes an entry: a directory tree, or whatever file or symlink took its place."""
  if path.is_symlink() or not path.is_dir():
    path.unlink(missing_ok=True)
  else:
    shutil.rmtree(path)


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _fsync_directory(directory: pathlib.Path) -> None:
  with contextlib.suppress(OSError):  # Not every platform can open a directory.
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


@contextlib.contextmanager
def _exclusive_lock(path: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive advisory lock on ``path`` (created if missing)."""
  with open(path, "a") as f:
    try:
      import fcntl  # noqa: PLC0415 -- POSIX only; elsewhere builds are not serialised.
    except ImportError:
      yield
      return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def load_or_build(entry: pathlib.Path, build: Callable[[pathlib.Path], Arrays], *,
                  expected: Mapping[str, str] | None = None,
                  about: Mapping[str, object] | None = None) -> Arrays:
  """The arrays of cache entry ``entry``, building it first if it is missing or damaged.

  Args:
    entry: the entry's directory, ``<root>/<group>/<name>``.
    build: makes the arrays; it gets an empty scratch directory (on the
      entry's file system, deleted afterwards) for downloads and the like. It
      must check what it builds: the entry records the checksums of whatever
      it returns.
    expected: array name to SHA-256 that an existing entry must match.
    about: extra facts recorded in the manifest (e.g. where the data came from).

  Raises:
    OSError: the entry's parent cannot be created or written.
    Whatever ``build`` raises; nothing is left behind then.
  """
  if entry.exists() or entry.is_symlink():
    try:
      return read_entry(entry, expected)
    except DamagedEntryError as e:
      print(f"warning: {e}; rebuilding it.", file=sys.stderr, flush=True)
  entry.parent.mkdir(parents=True, exist_ok=True)
  with _exclusive_lock(entry.parent / f".{entry.name}.lock"):
    if entry.exists() or entry.is_symlink():  # Built by another process meanwhile, or damaged.
      try:
        return read_entry(entry, expected)
      except DamagedEntryError:
        _remove(entry)
    for stale in entry.parent.glob(f".{entry.name}.tmp-*"):  # Left by a killed build.
      shutil.rmtree(stale, ignore_errors=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
      os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's is 0700.
      scratch = staging / "scratch"
      scratch.mkdir()
      arrays = build(scratch)
      shutil.rmtree(scratch)
      _write_entry(staging, arrays, about or {})
      os.rename(staging, entry)  # Atomic: the entry appears complete, or not at all.
      _fsync_directory(entry.parent)
    except BaseException:
      shutil.rmtree(staging, ignore_errors=True)
      raise
  return arrays
