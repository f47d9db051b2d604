"""What the XLA:TPU compiler says the article's steps cost on a TPU, with no TPU.

    pip install -e ".[tpu-compile]"        # libtpu, through jax[tpu] at jax's version
    python -m benchmarks.tpu_compile                       # v5e, everything (~15 compiles)
    python -m benchmarks.tpu_compile --topology v6e:2x2 --rows train
    python -m benchmarks.tpu_compile --rows optimizer

libtpu's compile-only devices let the real XLA:TPU compiler build the pipeline's
steps on a CPU machine. Nothing runs: every figure is the compiler's cost model,
per chip, not a measurement on a chip (:mod:`benchmarks.cost_model` says what each
column means). It prints, for the named topology's chip:

* ``train``: the article's train step (:mod:`benchmarks.article_step`: the
  article's network at batch 128, its optimizer Adam(1e-4, decay 1e-6), with and
  without max_norm(3) on the Dense(1024) kernel, params and optimizer state
  donated) in float32 and bfloat16 compute, on one chip; and the pipeline's train
  slice (``experiments.cifar10.steps.build_steps``), which also takes the batch
  out of the training set held on the chip, as a run does;
* ``eval``: the pipeline's eval slice (batch 500) on one chip;
* ``parallel``: the pipeline's train slice with max_norm on 4 and 8 chips of the same
  generation, data-parallel (``data``) and with the Dense(1024) kernel and its
  Adam slots split over the chips by rows (``in``) or by neurons (``out``), as
  ``--shard-dense1`` does;
* ``optimizer``: the optimizer update alone on the (86528, 1024) float32 kernel
  (one pass over it = 354 MB), as "kernel passes" = bytes accessed / 354 MB.

``--topology h100`` does the same for one NVIDIA H100 through JAX's CUDA plugin
(``pip install "jax-cuda12-plugin==<your jax>"``, no GPU or CUDA libraries needed).

Exit status: 0 done; 2 bad flags (an unknown topology among them); 1 libtpu (or
the CUDA plugin, for h100) not installed (the message gives the install command).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from benchmarks import cost_model
from benchmarks.article_step import article_optimizer, jitted_train_step
from benchmarks.cost_model import Chip, Cost, abstract
from experiments.cifar10 import input_pipeline, metrics, sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.models import CNN
from experiments.cifar10.steps import build_steps, create_train_state

__all__ = ["article_step_cost", "eval_step_cost", "main", "optimizer_cost", "train_step_cost"]

KERNEL_SHAPE = (86528, 1024)  # The article's Dense(1024) kernel.
KERNEL_BYTES = 86528 * 1024 * 4


def _mesh(devices: Sequence[Any]) -> Mesh:
  return jax.make_mesh((len(devices),), (sharding.DATA,), axis_types=(AxisType.Auto,),
                       devices=list(devices))


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
  train_args = (abstract(state, state_sharding), abstract(metrics.zeros(constrained), rep),
                split(num_train), order(num_train, config.batch_size), index, index)
  eval_args = (abstract(state.params, state_sharding.params),
               abstract(metrics.zeros(with_telemetry=False), rep),
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
  return Cost.of(jitted_train_step(made["graphdef"], tx), abstract(params, rep),
                 abstract(opt_state, rep),
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
  return Cost.of(jax.jit(step, donate_argnums=(0, 1)), abstract(kernel, rep),
                 abstract(state, rep), abstract(kernel, rep))


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
                      f"{', '.join(cost_model.KNOWN_TOPOLOGIES)}; default: %(default)s)")
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
    generation = cost_model.generation_of(args.topology)
  except cost_model.UsageError as e:
    _fail(str(e), 2)
  gpu = generation in cost_model.GPUS
  if gpu and cost_model.cuda_plugin_missing():
    _fail(f"JAX's CUDA plugin is not installed; install it with: {cost_model.INSTALL_CUDA}", 1)
  if not gpu and cost_model.libtpu_missing():
    _fail(f"libtpu is not installed; install it with: {cost_model.INSTALL} "
          '(or pip install -e ".[tpu-compile]")', 1)
  if gpu and "parallel" in args.rows:
    args.rows = [r for r in args.rows if r != "parallel"]
    print("(no 'parallel' rows for a GPU: one device only)", file=sys.stderr)
  try:
    generation, chip, devices = cost_model.resolve_topology(args.topology)
    slices = {n: (devices if len(devices) == n else
                  cost_model.resolve_topology(f"{generation}:{chip.slices[n]}")[2])
              for n in (args.chips if "parallel" in args.rows else ())}
  except cost_model.UsageError as e:
    _fail(str(e), 2)
  label = cost_model.GPU_LABEL if gpu else cost_model.LABEL
  print(f"# {label}\n")
  print(f"{generation} ({devices[0].device_kind}), jax {jax.__version__}, "
        f"{cost_model.compiler_version(gpu)}."
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


if __name__ == "__main__":
  main()
