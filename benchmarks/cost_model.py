"""Chips, compile-only devices and the compiler's cost model of one compiled program.

libtpu's compile-only devices (``jax.experimental.topologies.get_topology_desc``,
:func:`resolve_topology`) let the real XLA:TPU compiler build a program on a CPU
machine; :meth:`Cost.of` compiles a jitted function for abstract arguments
(:func:`abstract`) and keeps what the compiler says of it, per chip:
``cost_analysis()`` (flops and bytes accessed) and ``memory_analysis()``
(arguments, outputs, donated and temporary bytes). Nothing runs on a chip.
:mod:`benchmarks.tpu_compile` prints these figures for the article's steps.

For each: whether it fits the chip's HBM (arguments + outputs - aliased +
temporaries, against the vendor's capacity), a roofline step time
``max(flops / peak, bytes / bandwidth)`` from the vendor's published per-chip
figures (bf16 peak; TPU matmuls at JAX's default precision run in bf16 passes),
and whether the compiled program holds a host callback or a host transfer.

For an NVIDIA H100, JAX's CUDA plugin compiles with the target config built in
here (no GPU or CUDA libraries needed). XLA:GPU's compile-only executables have no
``cost_analysis()``; the bytes are then XLA's HloCostAnalysis of the optimized
program (a private jaxlib function), which cannot see inside cuBLAS and cuDNN
calls, so no flops are shown and the roofline uses the bytes alone.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
import time
from typing import Any

import jax

__all__ = ["CHIPS", "GPUS", "INSTALL", "INSTALL_CUDA", "KNOWN_TOPOLOGIES", "Chip", "Cost",
           "UsageError", "abstract", "compiler_version", "cuda_plugin_missing", "generation_of",
           "host_ops", "libtpu_missing", "resolve_topology"]

# Compile-only devices touch no chip, so several processes may load libtpu at once (by
# default libtpu takes a lock file that lets only one process in).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

LABEL = "XLA:TPU compiler cost model (compile-only), not measured on a chip"
GPU_LABEL = ("XLA:GPU's compiled program (compile-only, H100 target), bytes by XLA's "
             "HloCostAnalysis; not measured on a GPU")


@dataclasses.dataclass(frozen=True)
class Chip:
  """A TPU generation's per-chip figures, as its vendor publishes them, and the
  libtpu topology names of its 4- and 8-chip slices."""
  peak_flops: float  # bf16 FLOP/s
  hbm_bandwidth: float  # bytes/s
  hbm_bytes: float  # capacity, in decimal bytes as published (GB)
  slices: dict[int, str]  # chips -> topology shape
  source: str


# Each figure from the vendor's page (read 2026-12-02). Capacities are read as decimal GB,
# the smaller reading, so that "fits" errs on the safe side.
CHIPS = {
    "v5e": Chip(197e12, 819e9, 16e9, {4: "2x2", 8: "2x4"},
                "https://cloud.google.com/tpu/docs/v5e"),
    "v6e": Chip(918e12, 1638e9, 32e9, {4: "2x2", 8: "2x4"},
                "https://cloud.google.com/tpu/docs/v6e"),
    "v5p": Chip(459e12, 2765e9, 95e9, {4: "2x2x1", 8: "2x2x2"},
                "https://cloud.google.com/tpu/docs/v5p"),
}
# One GPU, through JAX's CUDA plugin: NVIDIA's H100 SXM data sheet (dense bf16, no sparsity).
GPUS = {"h100": Chip(989e12, 3.35e12, 80e9, {}, "https://www.nvidia.com/en-us/data-center/h100/")}
KNOWN_TOPOLOGIES = tuple(f"{gen}:{shape}" for gen, chip in CHIPS.items()
                         for shape in chip.slices.values()) + tuple(GPUS)
INSTALL = f'pip install "jax[tpu]=={jax.__version__}"'
INSTALL_CUDA = f'pip install "jax-cuda12-plugin=={jax.__version__}"'

# What XLA:GPU needs to compile for an H100 SXM with no GPU attached (a text
# stream_executor.GpuTargetConfigProto): compute capability 9.0, 132 SMs, 80 GB of HBM3 at
# 3.35 TB/s, 50 MB of L2, 1.98 GHz; CUDA's per-SM and per-block limits for 9.0.
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 shared_memory_per_block_optin: 232448
  threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84942979072 registers_per_core_limit: 65536
  registers_per_block_limit: 65536 cuda_compute_capability { major: 9 }
}
platform_name: "CUDA"
dnn_version_info { major: 9 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""


class UsageError(ValueError):
  """A bad flag; the message is one line."""


def libtpu_missing() -> bool:
  try:
    import libtpu  # noqa: F401, PLC0415 -- only whether it is there
  except ImportError:
    return True
  return False


def cuda_plugin_missing() -> bool:
  try:
    return not any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") for v in (12, 13))
  except ImportError:  # No jax_plugins package at all.
    return True


@functools.cache
def compiler_version(gpu: bool) -> str:
  """The compiler's package and version: ``libtpu 0.0.x``, or JAX's CUDA plugin for a GPU."""
  from importlib import metadata  # noqa: PLC0415
  package = "jax-cuda12-plugin" if gpu else "libtpu"
  try:
    return f"{package} {metadata.version(package)}"
  except metadata.PackageNotFoundError:
    return f"{package} unknown"


def generation_of(name: str) -> str:
  """The TPU generation of a topology name such as ``v5e:2x2`` (or ``h100``).

  Raises:
    UsageError: no generation with published figures here.
  """
  if name in GPUS:
    return name
  generation, colon, shape = name.partition(":")
  if generation not in CHIPS or not colon or not shape:
    raise UsageError(f"unknown topology {name!r}; known: {', '.join(KNOWN_TOPOLOGIES)}")
  return generation


def resolve_topology(name: str) -> tuple[str, Chip, list[Any]]:
  """``(generation, chip, compile-only devices)`` of a topology name such as ``v5e:2x2``.

  Raises:
    UsageError: the generation has no published figures here, or libtpu does not
      know the shape.
  """
  generation = generation_of(name)
  known = ", ".join(KNOWN_TOPOLOGIES)
  from jax.experimental import topologies  # noqa: PLC0415 -- probes libtpu
  if generation in GPUS:
    # CUDA's plugin checks the CUDA libraries unless the CPU alone is asked for.
    if not jax.config.jax_platforms:
      jax.config.update("jax_platforms", "cpu")
    devices = topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                           target_config=H100_TARGET_CONFIG).devices
    return generation, GPUS[generation], devices
  try:
    devices = topologies.get_topology_desc(name, "tpu").devices
  except Exception as e:  # libtpu's JaxRuntimeError, whose text spans lines
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"libtpu does not know topology {name!r} ({reason}); known: {known}") from e
  return generation, CHIPS[generation], devices


# Custom calls and transfers that run on, or wait for, the host.
_HOST_OP = re.compile(
    r'custom_call_target="[^"]*(?:callback|[Hh]ost)[^"]*"'
    r"|is_host_transfer=true|\b(?:outfeed|infeed)\(")


def host_ops(hlo_text: str) -> list[str]:
  """The host callbacks and host transfers in a compiled program's HLO text."""
  return sorted(set(_HOST_OP.findall(hlo_text)))


@dataclasses.dataclass(frozen=True)
class Cost:
  """The compiler's figures for one compiled program, per chip."""
  flops: float
  bytes_accessed: float
  arguments: int
  outputs: int
  aliased: int
  temporaries: int
  host_ops: tuple[str, ...]
  compile_seconds: float

  @property
  def peak_bytes(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries

  def roofline_seconds(self, chip: Chip) -> float:
    """``max(flops / peak, bytes / bandwidth)``; the bytes alone where flops are unknown."""
    compute = 0.0 if math.isnan(self.flops) else self.flops / chip.peak_flops
    return max(compute, self.bytes_accessed / chip.hbm_bandwidth)

  @classmethod
  def of(cls, jitted: Any, *args: Any) -> Cost:
    """Compiles ``jitted`` for ``args`` (``ShapeDtypeStruct``\\ s with shardings)."""
    start = time.perf_counter()
    compiled = jitted.trace(*args).lower().compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    flops = float(cost.get("flops", 0.0))
    if not cost:  # XLA:GPU's compile-only executables have none: count the optimized program.
      from jax._src import xla_bridge  # noqa: PLC0415
      from jax._src.lib import _jax  # noqa: PLC0415
      cost = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"),
                                           compiled.runtime_executable().hlo_modules()[0])
      flops = math.nan  # cuBLAS and cuDNN calls are opaque to it: their flops are not counted.
    memory = compiled.memory_analysis()
    return cls(flops=flops,
               bytes_accessed=float(cost.get("bytes accessed", 0.0)),
               arguments=memory.argument_size_in_bytes, outputs=memory.output_size_in_bytes,
               aliased=memory.alias_size_in_bytes, temporaries=memory.temp_size_in_bytes,
               host_ops=tuple(host_ops(compiled.as_text())), compile_seconds=seconds)


def abstract(tree: Any, shardings: Any) -> Any:
  """``tree``'s shapes and dtypes with ``shardings`` (one sharding, or a tree of them)."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
