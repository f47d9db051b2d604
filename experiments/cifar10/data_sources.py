"""Where the examples come from: CIFAR-10's canonical archive, or a prepared tfds copy.

:func:`open_splits` returns the ``train`` and ``test`` splits of ``config``,
each in tfds's stored order (the order that the train/validation split and
the subsets index into), from one of two places:

- No ``--data-dir`` (the default, ``cifar10`` only): :mod:`.cifar10_archive`
  fetches ``cifar-10-binary.tar.gz`` once, verifies it, and keeps the decoded
  arrays in the cache (:mod:`.array_cache`). Neither tfds's reader nor
  TensorFlow is involved.
- ``--data-dir D``: tfds reads its prepared copy, ``D/<name>/<version>/``,
  through ``tfds.data_source`` (array_record; no TensorFlow). A complete
  CIFAR-10 copy is decoded once, checked against CIFAR-10's checksums
  (:data:`.cifar10_archive.ARRAYS`) and cached, keyed by the copy's path and
  its files' names, sizes and modification times, so two copies never share
  an entry and nothing is written into ``D``. Anything else (another data set,
  or the fake data of ``tfds.testing.mock_data``) is decoded on demand, only
  the examples that are used, and never cached.

Both paths give the same arrays, bit for bit; later starts read them back
from the cache (checked again, nothing decoded; a cached copy is found without
even importing tfds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np

from experiments.cifar10 import array_cache, cifar10_archive
from experiments.cifar10.configs import Config

__all__ = ["DataUnavailableError", "Decoded", "copy_cache_entry", "decode_examples", "decoded_copy",
           "import_tfds", "open_splits", "read_cached_copy"]

_READ_CHUNK = 5000  # Examples decoded per `__getitems__` call (batched array_record reads).
_ARCHIVE_DATASET = "cifar10"  # The one data set with a canonical archive here.

# absl warnings that tfds logs and a user cannot act on: the PNG decoder it
# picks, and a probe of a folder whose real problem this module reports itself.
_QUIET = ("OpenCV is not installed", "has no dataset_info.json")


class DataUnavailableError(RuntimeError):
  """The data set is neither on disk nor obtainable; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Decoded:
  """A whole split, already decoded: ``images`` uint8 ``[n, 32, 32, 3]``, ``labels``
  int32 ``[n]``."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


def _drop_unactionable(record: logging.LogRecord) -> bool:
  message = record.getMessage()
  return not any(text in message for text in _QUIET)


def import_tfds():
  """tensorflow_datasets, imported on first use (the archive path does without it)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  absl_logger = logging.getLogger("absl")
  if _drop_unactionable not in absl_logger.filters:
    absl_logger.addFilter(_drop_unactionable)
  return tfds


def _tfds_is_mocked() -> bool:
  """Whether ``tfds.testing.mock_data`` is active. tfds then serves fake examples for
  any data set: they must come through tfds, and never reach the cache."""
  mocking = sys.modules.get("tensorflow_datasets.testing.mocking")
  if mocking is None:  # Not even imported: no mock, and no need to import tfds.
    return False
  builder = sys.modules["tensorflow_datasets"].core.DatasetBuilder
  return any(getattr(getattr(builder, method), "__module__", None) == mocking.__name__
             for method in ("as_data_source", "download_and_prepare"))


def decode_examples(source: Any, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """Decodes examples ``indices`` of a tfds data source, in that order, into uint8
  images ``[n, 32, 32, 3]`` and int32 labels ``[n]``."""
  images: list[np.ndarray] = []
  labels: list[int] = []
  for start in range(0, len(indices), _READ_CHUNK):
    examples = source.__getitems__(indices[start:start + _READ_CHUNK])
    images.extend(ex["image"] for ex in examples)
    labels.extend(ex["label"] for ex in examples)
  return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def open_splits(config: Config) -> tuple[Any, Any]:
  """The ``train`` and ``test`` splits of ``config``: each a :class:`Decoded`, or a tfds
  data source that decodes on demand (``len`` and ``__getitems__``).

  Raises:
    DataUnavailableError: the data set cannot be found, fetched, verified or built.
  """
  if config.data_dir is None and config.dataset == _ARCHIVE_DATASET and not _tfds_is_mocked():
    return _from_archive(config)
  return _from_tfds(config.dataset, config.data_dir)


def _as_splits(arrays: dict[str, np.ndarray]) -> tuple[Decoded, Decoded]:
  return (Decoded(arrays["train_images"], arrays["train_labels"]),
          Decoded(arrays["test_images"], arrays["test_labels"]))


def _from_archive(config: Config) -> tuple[Decoded, Decoded]:
  try:
    arrays = cifar10_archive.load(config.data_url, download=config.download)
  except cifar10_archive.ArchiveError as e:
    raise DataUnavailableError(f"CIFAR-10 is not available: {e}") from e
  except OSError as e:  # The cache directory cannot be created or written.
    raise DataUnavailableError(
        f"CIFAR-10 cannot be built: {e.strerror or e} ({e.filename or ''}). Set "
        f"${array_cache.CACHE_DIR_ENV} to a writable directory (the decoded data take "
        f"185 MB), or point --data-dir at a prepared tfds copy.") from e
  return _as_splits(arrays)


def _how_to_get_data(name: str) -> str:
  if name != _ARCHIVE_DATASET:
    return (f"Prepare '{name}' with tfds first (building it needs TensorFlow; reading it "
            f"does not).")
  return (f"Without --data-dir, CIFAR-10's canonical archive is fetched once from "
          f"{cifar10_archive.DEFAULT_URL} (or a mirror: --data-url URL or "
          f"${cifar10_archive.URL_ENV}) and decoded into the cache; no TensorFlow needed.")


def _where(data_dir: str | None) -> str:
  return f"--data-dir {data_dir}" if data_dir else "tfds's default data directory"


def _missing_copy(name: str, data_dir: str | None, version_dir: pathlib.Path,
                  version: str) -> DataUnavailableError:
  """The error for a data directory without a prepared copy, naming what is there."""
  root, folder = version_dir.parent.parent, version_dir.parent
  if not root.exists():
    cause = f"{root} does not exist"
  elif not root.is_dir():
    cause = f"{root} is not a directory"
  elif not folder.is_dir():
    cause = f"{root} holds no {name}/ folder"
  else:
    found = sorted(p.name for p in folder.iterdir())
    cause = (f"{folder} holds {found or 'nothing'}, but no prepared version {version} "
             f"(a {version}/ folder with dataset_info.json and array_record files)")
  return DataUnavailableError(
      f"No prepared copy of '{name}' in {_where(data_dir)}: {cause}. --data-dir must be the "
      f"directory that holds {name}/{version}/ as tfds prepares it (for example "
      f"../shared/tensorflow_datasets). {_how_to_get_data(name)}")


def _from_tfds(name: str, data_dir: str | None) -> tuple[Any, Any]:
  mocked = _tfds_is_mocked()
  if not mocked and name == _ARCHIVE_DATASET and data_dir is not None:
    cached = read_cached_copy(pathlib.Path(data_dir) / name / cifar10_archive.TFDS_VERSION)
    if cached is not None:
      return cached
  tfds = import_tfds()
  try:
    version_dir = None
    if not mocked:  # A mock has no files; it serves any name from anywhere.
      builder = tfds.builder(name, data_dir=data_dir)
      version_dir = pathlib.Path(builder.data_dir)
      if not builder.is_prepared():
        raise _missing_copy(name, data_dir, version_dir, str(builder.version))
    train, test = (tfds.data_source(name, split=split, data_dir=data_dir, download=False)
                   for split in ("train", "test"))
  except DataUnavailableError:
    raise
  except Exception as e:  # tfds raises many kinds: unknown names, unreadable files.
    if version_dir is not None:  # A prepared copy that cannot be opened.
      raise _damaged_copy(version_dir, e) from e
    raise DataUnavailableError(
        f"tfds could not read '{name}' from {_where(data_dir)}: {type(e).__name__}: {e}. "
        f"{_how_to_get_data(name)}") from e
  sizes = tuple(cifar10_archive.ARRAYS[f"{split}_labels"].shape[0] for split in ("train", "test"))
  if version_dir is None or name != _ARCHIVE_DATASET or (len(train), len(test)) != sizes:
    return train, test  # Decoded on demand; not CIFAR-10 as published, so not cached.
  return decoded_copy(train, test, version_dir)


def copy_cache_entry(version_dir: pathlib.Path) -> pathlib.Path:
  """The cache entry of a prepared copy, named after its real path and its files'
  names, sizes and modification times."""
  digest = hashlib.sha256(str(version_dir.resolve()).encode())
  for path in sorted(version_dir.iterdir()):
    stat = path.stat()
    digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
  return array_cache.cache_root() / "cifar10" / f"tfds-{digest.hexdigest()[:16]}"


def read_cached_copy(version_dir: pathlib.Path) -> tuple[Decoded, Decoded] | None:
  """The cached arrays of a prepared copy, read without tfds, or None when there are
  none yet (or they are damaged: the caller then decodes the copy again)."""
  if not (version_dir / "dataset_info.json").is_file():
    return None
  entry = copy_cache_entry(version_dir)
  if not entry.is_dir():
    return None
  try:
    return _as_splits(array_cache.read_entry(entry, cifar10_archive.expected_sha256()))
  except array_cache.DamagedEntryError:
    return None


def _damaged_copy(version_dir: pathlib.Path, error: Exception) -> DataUnavailableError:
  first = (str(error).strip().splitlines() or [""])[0][:200]
  return DataUnavailableError(
      f"The copy in {version_dir} cannot be read ({type(error).__name__}: {first}). The copy "
      f"is damaged or incomplete; copy it again, or omit --data-dir to build CIFAR-10 from "
      f"its canonical archive.")


def _decode_and_check(train: Any, test: Any, version_dir: pathlib.Path
                      ) -> dict[str, np.ndarray]:
  """Every example of a prepared CIFAR-10 copy, checked against CIFAR-10's checksums."""
  start = time.perf_counter()
  arrays = {}
  for split, source in (("train", train), ("test", test)):
    try:
      arrays[f"{split}_images"], arrays[f"{split}_labels"] = decode_examples(
          source, list(range(len(source))))
    except Exception as e:  # Riegeli, array_record, protobuf: a truncated or flipped shard.
      raise _damaged_copy(version_dir, e) from e
  for name, want in cifar10_archive.expected_sha256().items():
    digest = array_cache.sha256_of(arrays[name])
    if digest != want:
      raise DataUnavailableError(
          f"The copy in {version_dir} does not decode to CIFAR-10: its {name} have SHA-256 "
          f"{digest}, expected {want}. The copy is damaged or was altered; copy it again, "
          f"or omit --data-dir to build CIFAR-10 from its canonical archive.")
  print(f"CIFAR-10: decoded {version_dir} in {time.perf_counter() - start:.1f} s "
        f"(checksums verified)", flush=True)
  return arrays


def decoded_copy(train: Any, test: Any, version_dir: pathlib.Path) -> tuple[Decoded, Decoded]:
  """A complete CIFAR-10 copy, decoded: from the cache, or decoded once and cached."""
  entry = copy_cache_entry(version_dir)
  try:
    entry.parent.mkdir(parents=True, exist_ok=True)
    writable = os.access(entry.parent, os.W_OK | os.X_OK)
  except OSError:
    writable = False
  if not writable:
    print(f"warning: the cache directory {entry.parent} cannot be written, so every start "
          f"decodes the whole copy; set ${array_cache.CACHE_DIR_ENV} to a writable "
          f"directory.", file=sys.stderr, flush=True)
    return _as_splits(_decode_and_check(train, test, version_dir))
  if not entry.exists():
    print(f"CIFAR-10: decoding the prepared copy once; later starts read {entry}", flush=True)
  decoded: dict[str, np.ndarray] = {}

  def build(_: pathlib.Path) -> dict[str, np.ndarray]:
    decoded.update(_decode_and_check(train, test, version_dir))
    return decoded
  try:
    return _as_splits(array_cache.load_or_build(
        entry, build, expected=cifar10_archive.expected_sha256(),
        about={"source": str(version_dir.resolve())}))
  except OSError as e:  # The disk is full, say: the cache is left as it was.
    print(f"warning: the cache entry {entry} cannot be written ({e.strerror or e}), so this "
          f"start decodes the copy in memory.", file=sys.stderr, flush=True)
    return _as_splits(decoded or _decode_and_check(train, test, version_dir))
