"""What the XLA:TPU compiler says the article's steps cost on a TPU, with no TPU.

    pip install -e ".[tpu-compile]"        # libtpu, through jax[tpu] at jax's version
    python -m benchmarks.tpu_compile                       # v5e, everything (~15 compiles)
    python -m benchmarks.tpu_compile --topology v6e:2x2 --rows train
    python -m benchmarks.tpu_compile --rows optimizer

libtpu's compile-only devices (``jax.experimental.topologies.get_topology_desc``)
let the real XLA:TPU compiler build the pipeline's steps on a CPU machine.
Nothing runs: every figure is the compiler's cost model (``cost_analysis()``:
flops and bytes accessed; ``memory_analysis()``: arguments and temporaries), per
chip, not a measurement on a chip. It prints, for the named topology's chip:

* ``train``: the article's train step (:mod:`benchmarks.article_step`: the
  article's network at batch 128, its optimizer Adam(1e-4, decay 1e-6), with and
  without max_norm(3) on the Dense(1024) kernel, params and optimizer state
  donated) in float32 and bfloat16 compute, on one chip; and the pipeline's train
  slice (``experiments.cifar10.train.build_steps``), which also takes the batch
  out of the training set held on the chip, as a run does;
* ``eval``: the pipeline's eval slice (batch 500) on one chip;
* ``parallel``: the pipeline's train slice with max_norm on 4 and 8 chips of the same
  generation, data-parallel (``data``) and with the Dense(1024) kernel and its
  Adam slots split over the chips by rows (``in``) or by neurons (``out``), as
  ``--shard-dense1`` does;
* ``optimizer``: the optimizer update alone on the (86528, 1024) float32 kernel
  (one pass over it = 354 MB), as "kernel passes" = bytes accessed / 354 MB.

For each: whether it fits the chip's HBM (arguments + outputs - aliased +
temporaries, against the vendor's capacity), a roofline step time
``max(flops / peak, bytes / bandwidth)`` from the vendor's published per-chip
figures (bf16 peak; TPU matmuls at JAX's default precision run in bf16 passes),
and whether the compiled program holds a host callback or a host transfer.

``--topology h100`` does the same for one NVIDIA H100 through JAX's CUDA plugin
(``pip install "jax-cuda12-plugin==<your jax>"``, no GPU or CUDA libraries needed),
with a target config built in here. XLA:GPU's compile-only executables have no
``cost_analysis()``; the bytes are then XLA's HloCostAnalysis of the optimized
program (a private jaxlib function), which cannot see inside cuBLAS and cuDNN
calls, so no flops are shown and the roofline uses the bytes alone.

Exit status: 0 done; 2 bad flags (an unknown topology among them); 1 libtpu (or
the CUDA plugin, for h100) not installed (the message gives the install command).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from benchmarks.article_step import article_optimizer, jitted_train_step
from experiments.cifar10 import input_pipeline, metrics, sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.models import CNN
from experiments.cifar10.train import build_steps, create_train_state

__all__ = ["CHIPS", "Chip", "Cost", "article_step_cost", "eval_step_cost", "host_ops", "main",
           "optimizer_cost", "resolve_topology", "train_step_cost"]

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
KERNEL_SHAPE = (86528, 1024)  # The article's Dense(1024) kernel.
KERNEL_BYTES = 86528 * 1024 * 4


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


def _mesh(devices: Sequence[Any]) -> Mesh:
  return jax.make_mesh((len(devices),), (sharding.DATA,), axis_types=(AxisType.Auto,),
                       devices=list(devices))


def _abstract(tree: Any, shardings: Any) -> Any:
  """``tree``'s shapes and dtypes with ``shardings`` (one sharding, or a tree of them)."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def _pipeline(devices: Sequence[Any], *, dtype: str = "float32", constrained: bool = True,
              shard_dense1: str | None = None):
  """The pipeline's jitted train and eval functions on ``devices`` and abstract
  arguments for them (the article preset's sizes; nothing is allocated)."""
  # conv_impl "auto" picks by the default backend, which is the CPU here: ask for the
  # convolutions that a TPU run gets.
  config = get_config("article", dtype=dtype, max_norm=3.0 if constrained else None,
                      shard_dense1=shard_dense1, conv_impl="xla")
  mesh = _mesh(devices)
  sharding.check_config(config, mesh)
  made: dict[str, Any] = {}

  def init(key):
    made["graphdef"], state, made["tx"] = create_train_state(config, key)
    return state
  state = jax.eval_shape(init, jax.random.key(config.seed))
  state_sharding = sharding.state_shardings(state, mesh, config.shard_dense1)
  train_fn, eval_fn, eval_batch = build_steps(config, made["graphdef"], made["tx"], mesh,
                                              state_sharding)
  rep, rows = sharding.replicated(mesh), NamedSharding(mesh, P(sharding.DATA))

  def split(n):  # A split on the chips, padded to whole shards as input_pipeline does.
    n = -(-n // mesh.size) * mesh.size
    return input_pipeline.Split(jax.ShapeDtypeStruct((n, 32, 32, 3), jnp.uint8, sharding=rows),
                                jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rows))

  def order(n, batch):
    return jax.ShapeDtypeStruct((input_pipeline.num_batches(n, batch) * batch,), jnp.int32,
                                sharding=rep)

  index = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
  num_train, num_test = 50_000 - config.val_size, 10_000
  train_args = (_abstract(state, state_sharding), _abstract(metrics.zeros(constrained), rep),
                split(num_train), order(num_train, config.batch_size), index)
  eval_args = (_abstract(state.params, state_sharding.params),
               _abstract(metrics.zeros(with_telemetry=False), rep),
               split(num_test), order(num_test, eval_batch), index)
  return (train_fn, train_args), (eval_fn, eval_args)


def train_step_cost(devices: Sequence[Any], *, dtype: str = "float32", constrained: bool = True,
                    shard_dense1: str | None = None) -> Cost:
  """The compiler's figures for the pipeline's train slice (article preset) on ``devices``:
  the batch taken from the data set on the chips, then the train step."""
  (train_fn, args), _ = _pipeline(devices, dtype=dtype, constrained=constrained,
                                  shard_dense1=shard_dense1)
  return Cost.of(train_fn, *args)


def article_step_cost(device: Any, *, dtype: str = "float32", constrained: bool = True) -> Cost:
  """The compiler's figures for the article's train step alone on one chip
  (:func:`benchmarks.article_step.jitted_train_step`: a batch of 128 already on the chip,
  the article's optimizer, params and optimizer state donated)."""
  rep = sharding.replicated(_mesh([device]))
  made: dict[str, Any] = {}
  tx = article_optimizer(constrained)

  def init():
    made["graphdef"], state = nnx.split(CNN(conv_impl="xla", dtype=jnp.dtype(dtype),
                                            rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    return params, tx.init(params)
  params, opt_state = jax.eval_shape(init)
  return Cost.of(jitted_train_step(made["graphdef"], tx), _abstract(params, rep),
                 _abstract(opt_state, rep),
                 jax.ShapeDtypeStruct((128, 32, 32, 3), jnp.float32, sharding=rep),
                 jax.ShapeDtypeStruct((128,), jnp.int32, sharding=rep))


def eval_step_cost(devices: Sequence[Any], *, dtype: str = "float32") -> Cost:
  """The compiler's figures for the pipeline's eval step (article preset) on ``devices``."""
  _, (eval_fn, args) = _pipeline(devices, dtype=dtype, constrained=False)
  return Cost.of(eval_fn, *args)


def _adam() -> optax.GradientTransformation:
  return optax.adam(1e-4)


OPTIMIZER_UPDATES: dict[str, Callable[[], Callable]] = {
    "optax.adam": lambda: _update(_adam()),
    "optax.chain(optax.adam, mnj.max_norm(3.0))":
        lambda: _update(optax.chain(_adam(), mnj.max_norm(3.0))),
    "optax.adam, then mnj.project_max_norm(params, 3.0)":
        lambda: _update(_adam(), project=True),
}


def _update(tx: optax.GradientTransformation, project: bool = False) -> Callable:
  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if project:
      params = mnj.project_max_norm(params, 3.0)
    return params, opt_state
  step.init = tx.init  # type: ignore[attr-defined]
  return step


def optimizer_cost(name: str, device: Any) -> Cost:
  """The compiler's figures for one optimizer update of the Dense(1024) kernel, params and
  optimizer state donated, on one chip."""
  step = OPTIMIZER_UPDATES[name]()
  rep = sharding.replicated(_mesh([device]))
  kernel = jax.ShapeDtypeStruct(KERNEL_SHAPE, jnp.float32)
  state = jax.eval_shape(step.init, kernel)
  return Cost.of(jax.jit(step, donate_argnums=(0, 1)), _abstract(kernel, rep),
                 _abstract(state, rep), _abstract(kernel, rep))


# ---- printing ----------------------------------------------------------------------------

def _giga(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{x / 1e9:,.2f}"


def _mega(x: float) -> str:
  return f"{x / 1e6:,.0f}"


def _row(name: str, cost: Cost, chip: Chip, extra: Sequence[str] = ()) -> str:
  fits = "yes" if cost.peak_bytes <= chip.hbm_bytes else "NO"
  cells = [name, _giga(cost.flops), _giga(cost.bytes_accessed), *extra, _mega(cost.arguments),
           _mega(cost.temporaries), f"{_giga(cost.peak_bytes)} ({fits})",
           f"{cost.roofline_seconds(chip) * 1e3:.2f}",
           ", ".join(cost.host_ops) or "none", f"{cost.compile_seconds:.0f}"]
  return "| " + " | ".join(cells) + " |"


def _header(first: str, extra: Sequence[str] = ()) -> str:
  cells = [first, "GFLOP", "GB accessed", *extra, "arguments MB", "temporaries MB",
           "peak GB (fits?)", "roofline ms", "host ops", "compile s"]
  return "| " + " | ".join(cells) + " |\n|" + "---|" * len(cells)


ROWS = ("train", "eval", "parallel", "optimizer")
LAYOUTS = {"data": None, "in": "in", "out": "out"}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], epilog="; ".join(__doc__.split("\n\n")[-1:]))
  parser.add_argument("--topology", default="v5e:2x2",
                      help="a libtpu topology of a known generation; one chip of it is used, "
                      f"and its 4- and 8-chip slices for 'parallel' (known: "
                      f"{', '.join(KNOWN_TOPOLOGIES)}; default: %(default)s)")
  parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                      help="which tables (default: all)")
  parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                      default=["float32", "bfloat16"], help="compute dtypes of 'train'")
  parser.add_argument("--chips", nargs="+", type=int, choices=[4, 8], default=[4, 8],
                      help="slice sizes of 'parallel'")
  parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
                      help="'parallel' layouts: data-parallel, or --shard-dense1 in/out")
  return parser


def _fail(message: str, status: int) -> None:
  print(f"benchmarks.tpu_compile: error: {message}", file=sys.stderr)
  raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    generation = generation_of(args.topology)
  except UsageError as e:
    _fail(str(e), 2)
  gpu = generation in GPUS
  if gpu and cuda_plugin_missing():
    _fail(f"JAX's CUDA plugin is not installed; install it with: {INSTALL_CUDA}", 1)
  if not gpu and libtpu_missing():
    _fail(f"libtpu is not installed; install it with: {INSTALL} "
          '(or pip install -e ".[tpu-compile]")', 1)
  if gpu and "parallel" in args.rows:
    args.rows = [r for r in args.rows if r != "parallel"]
    print("(no 'parallel' rows for a GPU: one device only)", file=sys.stderr)
  try:
    generation, chip, devices = resolve_topology(args.topology)
    slices = {n: (devices if len(devices) == n else
                  resolve_topology(f"{generation}:{chip.slices[n]}")[2])
              for n in (args.chips if "parallel" in args.rows else ())}
  except UsageError as e:
    _fail(str(e), 2)
  label = GPU_LABEL if gpu else LABEL
  print(f"# {label}\n")
  compiler = "jax-cuda12-plugin" if gpu else "libtpu"
  print(f"{generation} ({devices[0].device_kind}), jax {jax.__version__}, "
        f"{compiler} {_version(compiler)}."
        f" Roofline: max(flops / {chip.peak_flops / 1e12:.0f} TFLOP/s, "
        f"bytes / {chip.hbm_bandwidth / 1e9:.0f} GB/s){' (bytes only: flops n/a)' if gpu else ''}"
        f"; fits: peak <= {chip.hbm_bytes / 1e9:.0f} GB ({chip.source}). Peak = arguments + "
        f"outputs - donated + temporaries. Batch 128 (eval 500); figures per chip.\n",
        flush=True)
  one = devices[:1]
  if "train" in args.rows or "eval" in args.rows:
    print(f"## The article's steps, one chip ({label})\n\n{_header('step')}", flush=True)
    if "train" in args.rows:
      for dtype in args.dtypes:
        for constrained in (False, True):
          name = f"train step, Adam{' + max_norm(3)' if constrained else ''}, {dtype}"
          cost = article_step_cost(one[0], dtype=dtype, constrained=constrained)
          print(_row(name, cost, chip), flush=True)
      print(_row("train slice (batch from the data set on the chip), Adam + max_norm(3), "
                 "float32", train_step_cost(one), chip), flush=True)
    if "eval" in args.rows:
      print(_row("eval slice, float32", eval_step_cost(one), chip), flush=True)
    print()
  if "parallel" in args.rows:
    print(f"## Train step with max_norm(3), float32, over several chips, per chip ({label})\n\n"
          f"{_header('chips, layout')}", flush=True)
    for n in args.chips:
      for layout in args.layouts:
        what = "data-parallel" if layout == "data" else f"--shard-dense1 {layout}"
        cost = train_step_cost(slices[n], shard_dense1=LAYOUTS[layout])
        print(_row(f"{n} ({generation}:{chip.slices[n]}), {what}", cost, chip), flush=True)
    print()
  if "optimizer" in args.rows:
    print(f"## Optimizer update alone, (86528, 1024) float32 kernel, one chip ({label})\n\n"
          f"One pass over the kernel = {KERNEL_BYTES / 1e6:.0f} MB.\n\n"
          f"{_header('update', ['kernel passes'])}", flush=True)
    for name in OPTIMIZER_UPDATES:
      cost = optimizer_cost(name, one[0])
      print(_row(f"`{name}`", cost, chip, [f"{cost.bytes_accessed / KERNEL_BYTES:.1f}"]),
            flush=True)
    print()


@functools.cache
def _version(package: str) -> str:
  from importlib import metadata  # noqa: PLC0415
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return "unknown"


if __name__ == "__main__":
  main()
