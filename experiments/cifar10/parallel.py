"""Data parallelism over every device of every host, on JAX's own runtime.

One 1-D :class:`jax.sharding.Mesh` with a ``"data"`` axis spans the devices
(all of them by default, across every process of a ``jax.distributed`` job).
The same jitted train step runs on one device or on a pod slice; only the
shardings of its inputs change, and XLA (GSPMD) partitions the computation and
inserts the collectives:

* the batch is split over ``"data"`` (the global batch stays the recipe's
  ``batch_size``, which must be divisible by the number of devices);
* parameters and optimizer state are replicated, except that with
  ``shard_dense1="in"`` or ``"out"`` the Dense(1024) kernel and its optimizer
  state (Adam's ``mu`` and ``nu``) are split over ``"data"`` along that axis,
  FSDP-style (each device holds ``1/n`` of the 88.6M-entry kernel). ``max_norm``
  needs whole-neuron norms; XLA adds the cross-device reduction when a neuron
  is split (tested in ``tests/test_cifar10_parallel.py``);
* the data sets live on the devices, split by example over ``"data"``: each
  host decodes only the examples its devices hold (:func:`load_splits`). A
  batch is gathered from its owners with one reduce-scatter
  (:func:`batch_at`), so the examples of every batch, and hence the result,
  do not depend on the number of devices or hosts (up to floating-point
  summation order).

:func:`initialize_distributed` starts a multi-process job
(``jax.distributed.initialize``); everything else works unchanged in one
process.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from experiments.cifar10 import input_pipeline
from experiments.cifar10.configs import Config
from experiments.cifar10.input_pipeline import Batch, Split, Splits
from experiments.cifar10.models import IMAGE_SHAPE

__all__ = [
    "DATA", "ParallelConfigError", "SplitSizes", "batch_at", "check_config",
    "console_of_primary_only", "describe", "eval_batch_size", "initialize_distributed",
    "is_primary", "load_splits", "make_mesh", "replicated", "slice_shardings",
    "state_shardings",
]

DATA = "data"  # The mesh axis that batches (and, optionally, the dense1 kernel) are split over.
# Paths (see `maxnorm_jax.path_to_str`) of the leaves that `shard_dense1` splits: the
# kernel in the params and its slots in the optimizer state (Adam's mu/nu, SGD's trace).
_DENSE1_KERNEL = re.compile(r"(^|/)dense1/kernel$")


class ParallelConfigError(ValueError):
  """The run cannot be laid out on these devices; the message says what to change."""


class SplitSizes(NamedTuple):
  """The number of real examples of each split (the arrays are padded to whole shards)."""
  train: int
  val: int
  test: int


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process JAX job (``jax.distributed.initialize``).

  Call it once per process, before anything else touches JAX. On Cloud TPU
  pod slices (and SLURM, Open MPI, ...) JAX finds all three arguments itself;
  elsewhere pass them, or set ``JAX_COORDINATOR_ADDRESS`` (read by JAX),
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. CPU collectives between
  processes go through gloo.

  Raises:
    ParallelConfigError: the arguments are missing and JAX found no cluster
      to take them from, or JAX was already in use.
  """
  try:
    num_processes = _from_env(num_processes, "JAX_NUM_PROCESSES")
    process_id = _from_env(process_id, "JAX_PROCESS_ID")
  except ValueError as e:
    raise ParallelConfigError(str(e)) from e
  # Only the CPU backend uses it; set before the backends start.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except (ValueError, TypeError) as e:
    raise ParallelConfigError(
        f"jax.distributed.initialize failed: {str(e).rstrip('.')}. Outside a cluster that "
        f"JAX detects by itself (Cloud TPU pod slices, SLURM, Open MPI), pass "
        f"--coordinator-address HOST:PORT (process 0's host), --num-processes N and "
        f"--process-id I to every process.") from e
  except RuntimeError as e:
    raise ParallelConfigError(
        f"jax.distributed.initialize failed: {str(e).rstrip('.')}. It must run before any "
        f"other JAX call in the process.") from e


def _from_env(value: int | None, name: str) -> int | None:
  if value is not None or not os.environ.get(name):
    return value
  try:
    return int(os.environ[name])
  except ValueError:
    raise ValueError(f"${name} must be an integer, got {os.environ[name]!r}.") from None


def is_primary() -> bool:
  """True in the process that writes logs and files (process 0)."""
  return jax.process_index() == 0


@contextlib.contextmanager
def console_of_primary_only() -> Iterator[None]:
  """Drops the other processes' stdout (the start-up and per-epoch lines), so a
  multi-host run prints them once. Errors (stderr) still show everywhere."""
  if is_primary():
    yield
    return
  with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
    yield


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ``("data",)`` mesh of all devices, or of the first ``num_devices``.

  Raises:
    ParallelConfigError: more devices are asked for than exist, or a subset
      is asked for in a multi-process job (every process must take part).
  """
  devices = jax.devices()
  if num_devices is None:
    num_devices = len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ParallelConfigError(
        f"--num-devices {num_devices} asked for, but there are {len(devices)} devices "
        f"({devices[0].platform}).")
  if num_devices != len(devices) and jax.process_count() > 1:
    raise ParallelConfigError(
        f"--num-devices {num_devices} is less than the {len(devices)} devices of this "
        f"{jax.process_count()}-process job; a multi-process run uses them all. Drop "
        f"--num-devices (or limit the devices per process, e.g. with "
        f"CUDA_VISIBLE_DEVICES).")
  return jax.make_mesh((num_devices,), (DATA,), axis_types=(AxisType.Auto,),
                       devices=devices[:num_devices])


def check_config(config: Config, mesh: Mesh) -> None:
  """Raises ParallelConfigError unless ``config``'s batch (and, with
  ``shard_dense1``, the Dense(1024) kernel) splits evenly over ``mesh``."""
  n = mesh.shape[DATA]
  if config.batch_size % n:
    raise ParallelConfigError(
        f"--batch-size {config.batch_size} does not split evenly over {n} devices. The "
        f"global batch is divided over the devices, so it must be a multiple of {n} (e.g. "
        f"{math.ceil(config.batch_size / n) * n}), or use fewer devices with --num-devices.")
  if config.shard_dense1 is not None:  # The kernel is (26 * 26 * conv_features, dense_features).
    side = IMAGE_SHAPE[0] - 3 * 2
    size = {"in": side * side * config.conv_features, "out": config.dense_features}
    if size[config.shard_dense1] % n:
      other = "out" if config.shard_dense1 == "in" else "in"
      raise ParallelConfigError(
          f"--shard-dense1 {config.shard_dense1}: the dense1 kernel's {config.shard_dense1!r} "
          f"axis ({size[config.shard_dense1]}) does not split evenly over {n} devices. Use "
          f"--shard-dense1 {other}, another device count, or no sharding.")


def eval_batch_size(batch_size: int, mesh: Mesh) -> int:
  """``batch_size`` rounded up to a multiple of the device count. Evaluation is
  masked, so its batch size does not change what is measured."""
  n = mesh.shape[DATA]
  return math.ceil(batch_size / n) * n


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of a value every device holds whole."""
  return NamedSharding(mesh, P())


def slice_shardings(mesh: Mesh, first: Any, *, train: bool) -> dict[str, Any]:
  """``in_shardings``/``out_shardings`` for ``jax.jit`` of a train (or eval) slice
  ``(state or params, totals, data, order, index) -> (state, totals, batch metrics)``
  (or ``-> totals``): ``first`` as given, the data split by rows, the rest
  replicated. Fixing the outputs keeps the donated state's layout step after step."""
  rep = replicated(mesh)
  return {"in_shardings": (first, rep, NamedSharding(mesh, P(DATA)), rep, rep),
          "out_shardings": (first, rep, rep) if train else rep}


def state_shardings(state: Any, mesh: Mesh, shard_dense1: str | None = None) -> Any:
  """A sharding for every leaf of ``state`` (params and optimizer state).

  Every leaf is replicated, except with ``shard_dense1`` ``"in"`` (rows) or
  ``"out"`` (columns, i.e. neurons): the ``dense1/kernel`` leaves (the kernel
  and its optimizer slots) are split over the ``"data"`` axis.

  Raises:
    ParallelConfigError: ``shard_dense1`` is not None/"in"/"out", there is no
      ``dense1/kernel``, or its axis does not split evenly over the devices.
  """
  if shard_dense1 not in (None, "in", "out"):
    raise ParallelConfigError(f"shard_dense1 must be None, 'in' or 'out', got {shard_dense1!r}.")
  n = mesh.shape[DATA]
  axis = {"in": 0, "out": 1}.get(shard_dense1)
  found = []

  def sharding(path, leaf):
    name = mnj.path_to_str(path)
    if axis is None or not _DENSE1_KERNEL.search(name) or np.ndim(leaf) != 2:
      return replicated(mesh)
    if leaf.shape[axis] % n:
      raise ParallelConfigError(
          f"Cannot shard {name} {tuple(leaf.shape)} over {n} devices along its "
          f"{shard_dense1!r} axis ({leaf.shape[axis]} is not a multiple of {n}). Use "
          f"--shard-dense1 {'out' if shard_dense1 == 'in' else 'in'}, another device count, "
          f"or no sharding.")
    found.append(name)
    return NamedSharding(mesh, P(DATA, None) if axis == 0 else P(None, DATA))

  shardings = jax.tree_util.tree_map_with_path(sharding, state)
  if axis is not None and not found:
    raise ParallelConfigError("shard_dense1 is set, but the state has no dense1/kernel.")
  return shardings


def describe(mesh: Mesh, shard_dense1: str | None = None) -> str:
  """How the run is laid out, for the start-up line."""
  devices = mesh.devices.ravel()
  if devices.size == 1:
    return str(devices[0])
  text = f"a data-parallel mesh of {devices.size} devices"
  if jax.process_count() > 1:
    text += f" over {jax.process_count()} processes"
  if shard_dense1:
    text += f", dense1/kernel sharded on its {shard_dense1!r} axis"
  return text


def _shard_rows(source, index: np.ndarray, mesh: Mesh) -> Split:
  """Examples ``index`` of ``source`` as arrays split by rows over ``"data"``.

  The rows are padded with zeros to a multiple of the device count (batches
  never index the padding). This process decodes only the rows of its own
  devices.
  """
  n, devices = len(index), mesh.shape[DATA]
  rows = math.ceil(n / devices) * devices
  sharding = NamedSharding(mesh, P(DATA))
  spans = [s[0].indices(rows)[:2] for s in sharding.addressable_devices_indices_map((rows,))
           .values()]
  lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
  real = input_pipeline.read_examples(source, index[lo:min(hi, n)] if lo < n else index[:1])
  images = np.zeros((hi - lo, *real.images.shape[1:]), np.uint8)
  labels = np.zeros((hi - lo,), np.int32)
  if lo < n:
    images[:min(hi, n) - lo], labels[:min(hi, n) - lo] = real.images, real.labels

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

  The same examples, in the same order, as
  :func:`~experiments.cifar10.input_pipeline.load_splits` followed by the
  subsets; but split by example over ``"data"``, and each process reads and
  decodes only its own devices' share.

  Raises:
    input_pipeline.DataUnavailableError: the data set cannot be found or built.
  """
  def source(split):
    return input_pipeline.open_source(config.dataset, split, config.data_dir, config.download)
  train_source, test_source = source("train"), source("test")
  train_index, val_index = input_pipeline.split_indices(
      len(train_source), config.val_size, config.split_seed)
  wanted = ((train_source, train_index[:config.train_subset]),
            (train_source, val_index[:config.eval_subset]),
            (test_source, np.arange(len(test_source))[:config.eval_subset]))
  splits = Splits(*(_shard_rows(src, index, mesh) for src, index in wanted))
  return splits, SplitSizes(*(len(index) for _, index in wanted))


def batch_at(data: Split, order: jax.Array, index: int | jax.Array, batch_size: int,
             dtype: jnp.dtype = jnp.float32, *, mesh: Mesh) -> Batch:
  """Batch ``index`` of ``order`` (a replicated array of example ids, -1 for
  padding) out of ``data`` split by rows over ``mesh``; the batch comes out split
  over ``"data"``.

  Every device picks the batch's examples it holds (zeros elsewhere), and one
  reduce-scatter (``psum_scatter``) hands each device its slice of the batch.
  Adding zeros is exact, so the batch equals
  :func:`~experiments.cifar10.input_pipeline.batch_at` on one device bit for bit.
  Use it inside ``jax.jit``.
  """
  def local(images, labels, order, index):
    ids = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
    shard = jax.lax.axis_index(DATA)
    # Padding (-1) takes example 0 with weight 0, as in input_pipeline.batch_at.
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
