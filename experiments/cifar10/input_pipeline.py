"""CIFAR-10 on the devices: read once, split by example over the mesh, batched on device.

Host side (once per run): :func:`load_splits` takes tfds's ``train`` and
``test`` splits, in tfds's stored order, from :mod:`.data_sources` (CIFAR-10's
canonical archive, decoded and cached, or a prepared tfds copy given by
``--data-dir``; no TensorFlow either way), splits ``val_size`` validation
examples off ``train`` with a fixed seed, and places every split on the devices
as uint8, split by example over the mesh's ``"data"`` axis. Each process takes
only the examples its own devices hold (and decodes only those, when a split
is decoded on demand).

Device side (every step, inside the jitted step): :func:`epoch_order`
shuffles the training set on the device, and :func:`batch_at` gathers one
batch from the devices that hold its examples and normalises it as the article
does (``x / 255``). An order is padded with ``-1`` to a whole number of
batches, so the last, partial batch keeps the same shape (no recompilation)
and its padding gets weight 0. The examples of every batch, and hence the
result, do not depend on the number of devices or hosts (up to floating-point
summation order).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.cifar10 import data_sources
from experiments.cifar10.configs import Config
from experiments.cifar10.data_sources import DataUnavailableError
from experiments.cifar10.sharding import DATA

__all__ = [
    "Batch", "DataUnavailableError", "Split", "SplitSizes", "Splits", "batch_at", "epoch_order",
    "eval_order", "load_splits", "num_batches", "read_examples", "shard_rows", "split_indices",
]


class Split(NamedTuple):
  """One split: ``images`` uint8 ``[n, 32, 32, 3]`` and ``labels`` int32 ``[n]``."""
  images: np.ndarray | jax.Array
  labels: np.ndarray | jax.Array


class Splits(NamedTuple):
  """The train, validation and test splits."""
  train: Split
  val: Split
  test: Split


class SplitSizes(NamedTuple):
  """The number of real examples of each split (the arrays are padded to whole shards)."""
  train: int
  val: int
  test: int


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


def read_examples(source, indices: np.ndarray) -> Split:
  """The examples ``indices`` of a split (in that order) as uint8 images and int32
  labels. ``source`` is a :class:`~.data_sources.Decoded` split, or a tfds data
  source, which decodes only these examples; a multi-host run reads only its own
  share this way."""
  if isinstance(source, data_sources.Decoded):
    return Split(source.images[indices], source.labels[indices])
  return Split(*data_sources.decode_examples(source, [int(i) for i in indices]))


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


def shard_rows(source, index: np.ndarray, mesh: Mesh) -> Split:
  """Examples ``index`` of ``source`` as arrays split by rows over ``"data"``.

  ``source`` is a random-access source of ``{"image", "label"}`` examples (what
  :func:`load_splits` reads, or synthetic data). The rows are padded with zeros
  to a multiple of the device count (batches never index the padding). This
  process decodes only the rows of its own devices.
  """
  n, devices = len(index), mesh.shape[DATA]
  rows = math.ceil(n / devices) * devices
  sharding = NamedSharding(mesh, P(DATA))
  spans = [s[0].indices(rows)[:2]  # type: ignore[index,union-attr]
           for s in sharding.addressable_devices_indices_map((rows,)).values()]
  lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
  real = read_examples(source, index[lo:min(hi, n)] if lo < n else index[:1])
  if hi <= n:  # No padding among this process's rows: use them as read.
    images, labels = real.images, real.labels
  else:
    images = np.zeros((hi - lo, *real.images.shape[1:]), np.uint8)
    labels = np.zeros((hi - lo,), np.int32)
    if lo < n:
      images[:n - lo], labels[:n - lo] = real.images, real.labels

  def local(buffer):
    def rows_of(idx):
      start, stop, _ = idx[0].indices(rows)
      return buffer[start - lo:stop - lo]
    return rows_of

  return Split(
      jax.make_array_from_callback((rows, *images.shape[1:]), sharding, local(images)),
      jax.make_array_from_callback((rows,), sharding, local(labels)))


def load_splits(config: Config, mesh: Mesh) -> tuple[Splits, SplitSizes]:
  """The train, validation and test splits of ``config``, on ``mesh``'s devices.

  The validation examples are a random subset, drawn with ``split_seed``, of
  tfds's ``train`` split (in tfds's stored order, whichever source it comes
  from); train keeps the rest in their stored order. The subsets take the
  first examples of each. Every split is split by example over ``"data"``, and
  each process takes only its own devices' share.

  Raises:
    DataUnavailableError: the data set cannot be found, fetched, verified or built.
  """
  train_source, test_source = data_sources.open_splits(config)
  try:
    train_index, val_index = split_indices(
        len(train_source), config.val_size, config.split_seed)
  except ValueError as e:  # A data set smaller than CIFAR-10, which --val-size cannot see.
    raise DataUnavailableError(
        f"--val-size {config.val_size} does not fit {config.dataset}'s training split of "
        f"{len(train_source):,} examples: {e} Pass a smaller --val-size.") from e
  wanted = ((train_source, train_index[:config.train_subset]),
            (train_source, val_index[:config.eval_subset]),
            (test_source, np.arange(len(test_source))[:config.eval_subset]))
  splits = Splits(*(shard_rows(src, index, mesh) for src, index in wanted))
  return splits, SplitSizes(*(len(index) for _, index in wanted))


def batch_at(data: Split, order: jax.Array, index: int | jax.Array, batch_size: int,
             dtype: jnp.dtype = jnp.float32, *, mesh: Mesh) -> Batch:
  """Batch ``index`` of ``order`` (a replicated array of example ids, -1 for
  padding) out of ``data`` split by rows over ``mesh``; the batch comes out split
  over ``"data"``.

  Every device picks the batch's examples it holds (zeros elsewhere), and one
  reduce-scatter (``psum_scatter``) hands each device its slice of the batch.
  Adding zeros is exact, so the batch is the same bit for bit on any number of
  devices. Use it inside ``jax.jit``.
  """
  def local(images, labels, order, index):
    ids = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
    shard = jax.lax.axis_index(DATA)
    # Padding (-1) takes example 0, with weight 0.
    local_ids = jnp.where(ids >= 0, ids, 0) - shard * images.shape[0]
    owned = (local_ids >= 0) & (local_ids < images.shape[0])
    safe = jnp.where(owned, local_ids, 0)
    pixels = jnp.where(owned[:, None, None, None], images[safe].astype(jnp.float32), 0.0)
    pixels = jax.lax.psum_scatter(pixels, DATA, scatter_dimension=0, tiled=True)
    picked = jax.lax.psum_scatter(jnp.where(owned, labels[safe], 0), DATA,
                                  scatter_dimension=0, tiled=True)
    mine = jax.lax.dynamic_slice_in_dim(ids, shard * pixels.shape[0], pixels.shape[0])
    return Batch((pixels / 255).astype(dtype), picked, (mine >= 0).astype(jnp.float32))

  return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA), P(DATA), P(), P()),
                       out_specs=P(DATA))(data.images, data.labels, order, index)
