"""CIFAR-10 from tensorflow-datasets, held on the device as uint8.

Host side (once): :func:`load_splits` reads tfds's ``train`` and ``test``
splits through ``tfds.data_source`` (array_record; no TensorFlow needed to
read), decodes them into uint8 arrays, and splits ``val_size`` validation
examples off ``train`` with a fixed seed.

Device side (every step, inside the jitted step): :func:`epoch_order` shuffles
the training set on the device, and :func:`batch_at` slices one batch out of
it and normalises it as the article does (``x / 255``). An order is padded with
``-1`` to a whole number of batches, so the last, partial batch keeps the same
shape (no recompilation) and its padding gets weight 0.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    "Batch", "DataUnavailableError", "Split", "Splits", "batch_at", "epoch_order",
    "eval_order", "load_splits", "num_batches", "open_source", "read_examples",
    "split_indices", "to_device",
]

_READ_CHUNK = 5000  # Examples decoded per `__getitems__` call (batched array_record reads).


class DataUnavailableError(RuntimeError):
  """The data set is neither on disk nor obtainable; the message says what to do."""


class Split(NamedTuple):
  """One split: ``images`` uint8 ``[n, 32, 32, 3]`` and ``labels`` int32 ``[n]``."""
  images: np.ndarray | jax.Array
  labels: np.ndarray | jax.Array


class Splits(NamedTuple):
  """The train, validation and test splits."""
  train: Split
  val: Split
  test: Split


class Batch(NamedTuple):
  """A training or evaluation batch.

  Attributes:
    images: float ``[batch, 32, 32, 3]`` in [0, 1].
    labels: int32 ``[batch]``.
    weights: float32 ``[batch]``: 1 for real examples, 0 for padding.
  """
  images: jax.Array
  labels: jax.Array
  weights: jax.Array


def _missing_data_message(name: str, data_dir: str | None, cause: BaseException) -> str:
  where = data_dir or "tfds's default data directory (~/tensorflow_datasets, or $TFDS_DATA_DIR)"
  no_tf = importlib.util.find_spec("tensorflow") is None
  target = repr(data_dir) if data_dir else "None"
  return (
      f"Could not load the '{name}' data set from {where}: {type(cause).__name__}: {cause}. "
      f"Either point --data-dir at a directory that holds a tfds-built copy "
      f"(<data-dir>/{name}/<version>/ with array_record files), or let tfds download and "
      f"build it once, which needs network access and TensorFlow"
      + (" (not installed here)" if no_tf else "")
      + f": `pip install tensorflow`, then rerun this command, or run `python -c \"import "
      f"tensorflow_datasets as tfds; tfds.data_source('{name}', data_dir={target})\"`. "
      f"Training reads the built copy without TensorFlow."
  )


def open_source(name: str, split: str, data_dir: str | None, download: bool):
  """tfds's random-access data source of one split; nothing is decoded yet.

  Raises:
    DataUnavailableError: the data is missing and could not be obtained.
  """
  try:
    if not download:  # Without this check tfds blames the file format of a missing data set.
      builder = tfds.builder(name, data_dir=data_dir)
      if not builder.is_prepared():
        raise FileNotFoundError(f"no prepared copy in {builder.data_dir} (--no-download)")
    return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises many kinds: missing files, no TF, no network.
    raise DataUnavailableError(_missing_data_message(name, data_dir, e)) from e


def read_examples(source, indices: np.ndarray) -> Split:
  """Decodes the examples ``indices`` of a data source (in that order) into uint8
  images and int32 labels. A multi-host run reads only its own share this way."""
  indices = [int(i) for i in indices]
  images, labels = [], []
  for start in range(0, len(indices), _READ_CHUNK):
    examples = source.__getitems__(indices[start:start + _READ_CHUNK])
    images.extend(ex["image"] for ex in examples)
    labels.extend(ex["label"] for ex in examples)
  return Split(np.stack(images).astype(np.uint8), np.asarray(labels, np.int32))


def _read_split(name: str, split: str, data_dir: str | None, download: bool) -> Split:
  """Decodes one tfds split into uint8 images and int32 labels."""
  source = open_source(name, split, data_dir, download)
  return read_examples(source, np.arange(len(source)))


def _take(split: Split, index: np.ndarray) -> Split:
  return Split(split.images[index], split.labels[index])


def load_splits(
    name: str = "cifar10",
    *,
    data_dir: str | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    download: bool = True,
) -> Splits:
  """Loads tfds's ``train``/``test`` and splits validation off ``train``.

  The validation examples are a random subset, drawn with ``split_seed``, of
  tfds's ``train`` split; train keeps the rest in their stored order.

  Raises:
    DataUnavailableError: the data is missing and could not be obtained.
    ValueError: ``val_size`` leaves no training examples.
  """
  full_train = _read_split(name, "train", data_dir, download)
  test = _read_split(name, "test", data_dir, download)
  train_index, val_index = split_indices(len(full_train.labels), val_size, split_seed)
  return Splits(train=_take(full_train, train_index), val=_take(full_train, val_index),
                test=test)


def split_indices(num_examples: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint ``(train, val)`` indices covering ``range(num_examples)``.

  ``val_size`` indices are drawn at random with ``seed``; both lists are sorted.

  Raises:
    ValueError: ``val_size`` leaves no training (or no validation) examples.
  """
  if not 0 < val_size < num_examples:
    raise ValueError(f"val_size must be in (0, {num_examples}), got {val_size}.")
  is_val = np.zeros(num_examples, bool)
  is_val[np.random.default_rng(seed).permutation(num_examples)[:val_size]] = True
  return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def to_device(split: Split, limit: int | None = None) -> Split:
  """Puts (the first ``limit`` examples of) a split on the default device."""
  end = None if limit is None else limit
  return Split(jnp.asarray(split.images[:end]), jnp.asarray(split.labels[:end]))


def num_batches(num_examples: int, batch_size: int) -> int:
  """Batches per pass, the last one possibly partial."""
  return -(-num_examples // batch_size)


def _pad(order: jax.Array, batch_size: int) -> jax.Array:
  padding = num_batches(order.shape[0], batch_size) * batch_size - order.shape[0]
  return jnp.pad(order, (0, padding), constant_values=-1)


def epoch_order(key: jax.Array, epoch: int | jax.Array, num_examples: int,
                batch_size: int) -> jax.Array:
  """The shuffled example order of one epoch, padded with -1 to whole batches.

  Depends only on ``(key, epoch)``, so a resumed run sees the same orders.
  """
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return _pad(perm.astype(jnp.int32), batch_size)


def eval_order(num_examples: int, batch_size: int) -> jax.Array:
  """The examples in stored order, padded with -1 to whole batches."""
  return _pad(jnp.arange(num_examples, dtype=jnp.int32), batch_size)


def batch_at(data: Split, order: jax.Array, index: int | jax.Array, batch_size: int,
             dtype: jnp.dtype = jnp.float32) -> Batch:
  """Batch number ``index`` of ``order``, gathered and normalised on the device."""
  ids = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
  valid = ids >= 0
  ids = jnp.where(valid, ids, 0)
  images = (data.images[ids].astype(jnp.float32) / 255).astype(dtype)
  return Batch(images, data.labels[ids], valid.astype(jnp.float32))
