"""How a run is laid out on the devices: the mesh, the shardings, and layout checks.

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
  is split (tested in ``tests/cifar10/test_sharding.py``);
* the data sets live on the devices, split by example over ``"data"`` (see
  :mod:`.input_pipeline`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from experiments.cifar10 import models
from experiments.cifar10.configs import Config

__all__ = [
    "DATA", "ParallelConfigError", "check_config", "describe", "eval_batch_size", "make_mesh",
    "replicated", "slice_shardings", "state_shardings",
]

DATA = "data"  # The mesh axis that batches (and, optionally, the dense1 kernel) are split over.
# The leaves that `shard_dense1` splits: the kernel in the params, and its slots in the
# optimizer state (Adam's mu/nu, SGD's trace), whose paths end with the kernel's path.
_DENSE1_KERNEL_OR_SLOT = re.compile(rf"(^|/){re.escape(models.DENSE1_KERNEL)}$")


class ParallelConfigError(ValueError):
  """The run cannot be laid out on these devices; the message says what to change."""


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
  if config.shard_dense1 is not None:
    size = {"in": models.dense1_in_features(config.conv_features),
            "out": config.dense_features}
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
  ``(state, totals, data, order, index, step_number) -> (state, totals, batch metrics)``
  (or ``(params, totals, data, order, index) -> totals``): ``first`` as given, the
  data split by rows, the rest replicated. Fixing the outputs keeps the donated
  state's layout step after step."""
  rep = replicated(mesh)
  counters = (rep, rep) if train else (rep,)
  return {"in_shardings": (first, rep, NamedSharding(mesh, P(DATA)), rep, *counters),
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
    if axis is None or not _DENSE1_KERNEL_OR_SLOT.search(name) or np.ndim(leaf) != 2:
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
