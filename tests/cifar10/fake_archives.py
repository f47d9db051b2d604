"""Archives in ``cifar-10-binary.tar.gz``'s format, for the data tests (not a test module).

:func:`tfds_order` is written from tfds's rule (examples keyed 0..n-1 in the
archive's order, stored sorted by ``md5(split name + key)``), independently of
``cifar10_archive.stored_order``, so that the tests check that code rather than
repeat it.
"""

import hashlib
import io
import pathlib
import tarfile

import numpy as np

from experiments.cifar10 import array_cache, cifar10_archive

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")


def tfds_order(split: str, num_examples: int) -> np.ndarray:
  """Stored example j is archive example ``order[j]``."""
  return np.array(sorted(range(num_examples),
                         key=lambda i: hashlib.md5(f"{split}{i}".encode()).digest()))


def write_cifar10_archive(path: pathlib.Path, arrays: dict,
                          members: list[str] | None = None) -> cifar10_archive.ArchiveChecksum:
  """Writes ``arrays`` (``train_images`` etc., in the archive's order) as the real
  archive lays them out: per record one label byte, then the R, G and B planes;
  training examples in ``data_batch_1..5.bin``, test examples in ``test_batch.bin``.
  ``members`` keeps only those files. Returns the file's size and checksums."""
  def records(images, labels):
    planes = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1)

  train = records(arrays["train_images"], arrays["train_labels"])
  files = {f"data_batch_{i + 1}.bin": part.tobytes()
           for i, part in enumerate(np.array_split(train, 5))}
  files["test_batch.bin"] = records(arrays["test_images"], arrays["test_labels"]).tobytes()
  files["batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n").encode()
  with tarfile.open(path, "w:gz", compresslevel=1) as tar:
    for name, data in files.items():
      if members is not None and name not in members:
        continue
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  data = path.read_bytes()
  return cifar10_archive.ArchiveChecksum(len(data), hashlib.md5(data).hexdigest(),
                                         hashlib.sha256(data).hexdigest())


def in_tfds_order(archive_arrays: dict) -> dict:
  """The arrays as tfds stores them."""
  stored = {}
  for split in ("train", "test"):
    order = tfds_order(split, len(archive_arrays[f"{split}_labels"]))
    for kind in ("images", "labels"):
      stored[f"{split}_{kind}"] = archive_arrays[f"{split}_{kind}"][order]
  return stored


def array_specs(arrays: dict) -> dict:
  return {name: cifar10_archive.ArraySpec(a.shape, str(a.dtype), array_cache.sha256_of(a))
          for name, a in arrays.items()}
