"""CIFAR-10 from its canonical archive, without TensorFlow: fetch, verify, decode, order.

:func:`load` returns the four CIFAR-10 arrays, exactly as tfds's prepared
``cifar10`` 3.0.2 copy decodes to, in the same order. The first call fetches
``cifar-10-binary.tar.gz`` (170 MB; from :data:`DEFAULT_URL`, or a mirror given by
``--data-url`` or ``$MAXNORM_CIFAR10_URL``), checks its size, MD5 and SHA-256,
decodes it, checks the arrays and keeps them in the cache
(:mod:`.array_cache`, entry ``cifar10/archive-<sha256 prefix>``); later calls read
them back from there, checked again. When the disk is full (the archive or the
entry cannot be written), the start decodes the archive in memory instead and
says so in one warning line; the cache is left as it was.

Why a decoded-array cache rather than a tfds-layout copy: the binary archive
already holds raw pixels (per record one label byte, then 3,072 bytes of R, G
and B planes, 32 x 32 each, row-major), so decoding it is a reshape. Writing
tfds's layout instead would mean encoding 60,000 PNGs and writing
``dataset_info.json`` and array_record files through tfds internals, only for
every later start to decode those PNGs again (the 12 s that the cache exists
to save); the arrays would have to be cached anyway. The cost: the cache is
this project's own format, so tfds cannot read it (a tfds copy still can be
read, with ``--data-dir``).

Order: the train/validation split and the subsets index into tfds's stored
order, so the arrays must come out in it. tfds's builder yields each split in
the archive's order with keys 0, 1, ..., and its writer stores the examples
sorted by the MD5 of the split's name and the key
(``tensorflow_datasets.core.shuffle.Shuffler``); :func:`stored_order` runs that
same shuffler (tfds is a dependency of the experiments anyway; it imports
without TensorFlow). The result is checked against :data:`ARRAYS`, the SHA-256
of each array of the canonical copy, so a change of that rule, a damaged
archive or a wrong decode fails loudly instead of training on other data.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import os
import pathlib
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from typing import BinaryIO, NamedTuple

import numpy as np
import tqdm

from experiments.cifar10 import array_cache

__all__ = [
    "ARCHIVE", "ARRAYS", "ArchiveChecksum", "ArchiveError", "ArraySpec", "ChecksumError",
    "DEFAULT_URL", "DISK_FULL", "MEMBERS", "TFDS_VERSION", "URL_ENV", "cache_entry", "decode",
    "expected_sha256", "fetch", "load", "parse_batches", "resolve_url", "stored_order", "verify",
]

DEFAULT_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
URL_ENV = "MAXNORM_CIFAR10_URL"  # A mirror of the same file, for machines behind a firewall.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # The errors of a write that no retry will fix.


class ArchiveChecksum(NamedTuple):
  """What the canonical archive file must be."""
  size: int
  md5: str
  sha256: str


# The MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html; size and
# SHA-256 from tfds's url_checksums/cifar10.txt.
ARCHIVE = ArchiveChecksum(
    size=170_052_171, md5="c32a1d4ab5d03f1284b67883e8d87530",
    sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")


class ArraySpec(NamedTuple):
  """One decoded array of the canonical data set, in tfds's stored order."""
  shape: tuple[int, ...]
  dtype: str
  sha256: str  # Of the values, C order, little-endian (array_cache.sha256_of).


TFDS_VERSION = "3.0.2"  # The version of tfds's cifar10 that ARRAYS describe.

# tfds's cifar10 3.0.2, decoded (measured on a prepared copy whose example ids
# give exactly the order of stored_order); the archive path must reproduce them.
ARRAYS: Mapping[str, ArraySpec] = {
    "train_images": ArraySpec(
        (50_000, 32, 32, 3), "uint8",
        "f18582ecd1373bff9c1d140fab5216a27f8a1f6b477e7169deb6e4ed860e0302"),
    "train_labels": ArraySpec(
        (50_000,), "int32", "a8ad73cb2f073a7456e52cb0b2e771d53e783cae6c058416b68f56ba7830bab7"),
    "test_images": ArraySpec(
        (10_000, 32, 32, 3), "uint8",
        "82afa4f4f8a69075def88a286829b9a6eaadcf501af77cb9bf832a7b041b9fd1"),
    "test_labels": ArraySpec(
        (10_000,), "int32", "484933607e6765ffc923900c94ff60af62ee4c6a5be37abc59f0b707f300e587"),
}



def expected_sha256() -> dict[str, str]:
  """Array name to SHA-256, from :data:`ARRAYS`."""
  return {name: spec.sha256 for name, spec in ARRAYS.items()}


_FOLDER = "cifar-10-batches-bin/"
MEMBERS = {"train": [f"{_FOLDER}data_batch_{i}.bin" for i in range(1, 6)],
           "test": [f"{_FOLDER}test_batch.bin"]}
_IMAGE_BYTES = 32 * 32 * 3
_RECORD_BYTES = 1 + _IMAGE_BYTES
_FILE_NAME = "cifar-10-binary.tar.gz"
_CHUNK = 1 << 20


class ArchiveError(RuntimeError):
  """The archive cannot be fetched or read, or is not what it should be."""


class ChecksumError(ArchiveError):
  """The fetched file is not the canonical archive (its size or checksum differs)."""


def resolve_url(url: str | None = None) -> str:
  """Where to fetch the archive: ``url`` (``--data-url``), else ``$MAXNORM_CIFAR10_URL``,
  else :data:`DEFAULT_URL`."""
  return url or os.environ.get(URL_ENV) or DEFAULT_URL


def cache_entry(root: pathlib.Path | None = None) -> pathlib.Path:
  """The cache directory of the decoded archive (named after its SHA-256)."""
  return (root or array_cache.cache_root()) / "cifar10" / f"archive-{ARCHIVE.sha256[:16]}"


def _checksum_message(url: str, size: int, sha256: str) -> str:
  return (f"checksum mismatch: the file from {url} is not the canonical {_FILE_NAME}: it has "
          f"{size:,} bytes and SHA-256 {sha256}, expected {ARCHIVE.size:,} bytes and SHA-256 "
          f"{ARCHIVE.sha256}. A mirror (--data-url or ${URL_ENV}) must serve that exact file.")


def fetch(url: str, destination: pathlib.Path | BinaryIO) -> None:
  """Downloads ``url`` (any scheme urllib knows, ``file://`` included) to ``destination``
  (a file, or a binary file object such as :class:`io.BytesIO`) and checks it against
  :data:`ARCHIVE`.

  Raises:
    ChecksumError: the file is not the canonical archive.
    ArchiveError: the download failed.
    OSError: the disk is full (ENOSPC, EDQUOT): ``destination`` cannot be written.
  """
  md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
  try:
    with contextlib.ExitStack() as stack, \
        urllib.request.urlopen(url, timeout=60) as response, \
        tqdm.tqdm(total=ARCHIVE.size, unit="B", unit_scale=True, desc=_FILE_NAME,
                  mininterval=1.0, leave=False) as bar:
      f = (stack.enter_context(open(destination, "wb"))
           if isinstance(destination, pathlib.Path) else destination)
      while chunk := response.read(_CHUNK):
        size += len(chunk)
        if size > ARCHIVE.size:  # Not the archive; do not fill the disk with it.
          raise ChecksumError(_checksum_message(url, size, "(not computed: too large)"))
        md5.update(chunk)
        sha256.update(chunk)
        f.write(chunk)
        bar.update(len(chunk))
  except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: a bad URL.
    if isinstance(e, OSError) and e.errno in DISK_FULL:
      raise  # Not the download's fault: the caller decodes in memory instead.
    reason = getattr(e, "reason", None) or e
    raise ArchiveError(
        f"could not download {url}: {reason}. Check the network, or fetch {_FILE_NAME} "
        f"from a mirror with --data-url URL (or ${URL_ENV}; file:///path works for a local "
        f"copy), or point --data-dir at a prepared tfds copy.") from e
  verify(url, size, md5.hexdigest(), sha256.hexdigest())


def verify(url: str, size: int, md5: str, sha256: str) -> None:
  """Raises :class:`ChecksumError` unless the file's size and digests are :data:`ARCHIVE`'s."""
  if (size, md5, sha256) != (ARCHIVE.size, ARCHIVE.md5, ARCHIVE.sha256):
    raise ChecksumError(_checksum_message(url, size, sha256))


def parse_batches(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """The images (uint8 ``[n, 32, 32, 3]``) and labels (int32 ``[n]``) of binary batch
  files, in file order.

  Raises:
    ArchiveError: a file is not a whole number of records.
  """
  for blob in blobs:
    if len(blob) % _RECORD_BYTES:
      raise ArchiveError(f"a batch file of {len(blob)} bytes is not a whole number of "
                         f"{_RECORD_BYTES}-byte records")
  records = np.frombuffer(b"".join(blobs), np.uint8).reshape(-1, _RECORD_BYTES)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # Planes -> HWC.
  return np.ascontiguousarray(images), records[:, 0].astype(np.int32)


def stored_order(split: str, num_examples: int, scratch: pathlib.Path) -> np.ndarray:
  """tfds's stored order of a split: stored example ``j`` is archive example ``order[j]``.

  tfds's builder keys the archive's examples 0..n-1 and its writer sorts them
  by the key's MD5 salted with the split's name; this runs that shuffler.
  ``scratch`` is where it would spill to disk (never, for 50,000 small records).
  """
  from tensorflow_datasets.core import shuffle  # noqa: PLC0415 -- needed only to build.

  shuffler = shuffle.Shuffler(scratch, hash_salt=split)
  for key in range(num_examples):
    shuffler.add(key, key.to_bytes(4, "little"))
  return np.array([int.from_bytes(data, "little") for _, data in shuffler], np.int64)


def decode(archive: pathlib.Path | BinaryIO, scratch: pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of :data:`ARRAYS`, decoded from the archive (a file, or a binary file
  object) and put in tfds's order.

  Reads the batch files straight out of the tar (nothing is extracted to disk; the
  ordering's shuffler writes to ``scratch`` only beyond 1 GB, which CIFAR-10's keys never
  reach).

  Raises:
    ArchiveError: a member is missing or unreadable, or the arrays differ from
      :data:`ARRAYS`.
  """
  wanted = {name for members in MEMBERS.values() for name in members}
  blobs: dict[str, bytes] = {}
  name = archive.name if isinstance(archive, pathlib.Path) else _FILE_NAME
  try:
    with (tarfile.open(archive, "r:gz") if isinstance(archive, pathlib.Path)
          else tarfile.open(fileobj=archive, mode="r:gz")) as tar:
      for member in tar:  # One pass: a gzip stream cannot seek back cheaply.
        if member.name in wanted:
          content = tar.extractfile(member) if member.isfile() else None
          if content is None:
            raise ArchiveError(f"{member.name} in {name} is not a regular file")
          blobs[member.name] = content.read()
  except (tarfile.TarError, EOFError, OSError) as e:
    raise ArchiveError(f"{name} cannot be read as CIFAR-10's binary archive: "
                       f"{type(e).__name__}: {e}") from e
  missing = sorted(wanted - set(blobs))
  if missing:
    raise ArchiveError(f"{name} lacks {', '.join(missing)}")
  arrays = {}
  for split, members in MEMBERS.items():
    images, labels = parse_batches([blobs.pop(name) for name in members])
    order = stored_order(split, len(labels), scratch)
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[order], labels[order]
  for name, spec in ARRAYS.items():
    array = arrays[name]
    if array.shape != spec.shape or str(array.dtype) != spec.dtype:
      raise ArchiveError(f"the archive decodes to {name} {array.dtype}{list(array.shape)}, "
                         f"expected {spec.dtype}{list(spec.shape)}")
    digest = array_cache.sha256_of(array)
    if digest != spec.sha256:
      raise ArchiveError(
          f"the archive's checksum matched, but its decoded {name} has SHA-256 {digest}, "
          f"not CIFAR-10's {spec.sha256}: the installed tensorflow-datasets may order "
          f"examples differently from the one these checksums come from (cifar10 "
          f"{TFDS_VERSION}). "
          f"Use --data-dir with a prepared tfds copy, and report this.")
  return arrays


def _build(url: str, scratch: pathlib.Path) -> dict[str, np.ndarray]:
  start = time.perf_counter()
  print(f"CIFAR-10: fetching {url} ({ARCHIVE.size / 1e6:.0f} MB) once; it is then decoded "
        f"into {cache_entry()}", flush=True)
  archive = scratch / _FILE_NAME
  fetch(url, archive)
  arrays = decode(archive, scratch)
  print(f"CIFAR-10: built in {time.perf_counter() - start:.1f} s (checksums verified)",
        flush=True)
  return arrays


def load(url: str | None = None, *, download: bool = True) -> dict[str, np.ndarray]:
  """The four CIFAR-10 arrays (:data:`ARRAYS`), built from the archive on first use.

  Args:
    url: where to fetch the archive (see :func:`resolve_url`).
    download: fetch and build when the cache holds no copy; if False, fail instead.

  Raises:
    ChecksumError: the fetched file is not the canonical archive (nothing is
      written to the cache then).
    ArchiveError: the archive cannot be fetched or read, or there is no built
      copy and ``download`` is False.
    OSError: the cache directory cannot be written (but a full disk decodes in memory).
  """
  entry = cache_entry()
  expected = expected_sha256()
  if not download:
    try:
      return array_cache.read_entry(entry, expected)
    except array_cache.DamagedEntryError as e:
      state = "does not exist" if not entry.exists() else f"is damaged ({e})"
      raise ArchiveError(
          f"no usable copy of CIFAR-10 built from {_FILE_NAME}: {entry} {state}, and "
          f"--no-download forbids fetching it. Rerun without --no-download to fetch and build "
          f"it once, or point --data-dir at a prepared tfds copy.") from e
  url = resolve_url(url)
  built: dict[str, np.ndarray] = {}

  def build(scratch: pathlib.Path) -> dict[str, np.ndarray]:
    built.update(_build(url, scratch))
    return built
  try:
    return array_cache.load_or_build(
        entry, build, expected=expected,
        about={"source": url, "archive_sha256": ARCHIVE.sha256})
  except OSError as e:
    if e.errno not in DISK_FULL:
      raise
    print(f"warning: the cache entry {entry} cannot be written ({e.strerror or e}), so this "
          f"start decodes CIFAR-10 in memory.", file=sys.stderr, flush=True)
    return built or _build_in_memory(url)


def _build_in_memory(url: str) -> dict[str, np.ndarray]:
  """The arrays, fetched and decoded without writing anything to disk."""
  archive = io.BytesIO()
  fetch(url, archive)
  archive.seek(0)
  return decode(archive, pathlib.Path(tempfile.gettempdir()))  # Never written: see decode.
