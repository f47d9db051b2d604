"""Train-step throughput of the article's network: our variants and peers, in one run.

Each variant trains the article's CNN (88.9M parameters; Adam + max-norm on the
Dense(1024) kernel) on a synthetic CIFAR-shaped batch. Every variant lives in
its own worker process (Keras picks its backend once per process), built and
warmed up first; then one command times them in interleaved rounds, one
worker at a time while the others wait, so machine noise hits them alike. The
table gives median img/s and the ratio to the first variant.

Variants:
  jax-xla-f32      Flax NNX + optax + maxnorm_jax, XLA's native convolutions, float32
  jax-im2col-f32   the same, convolutions as im2col + matmul (the CPU default)
  jax-im2col-bf16  the same, bfloat16 compute, float32 params and Adam state
  torch            PyTorch eager, Adam, then torch.renorm on the Dense(1024) weight
  keras-jax        Keras 3 on its JAX backend, Adam, MaxNorm(3) (needs keras)
  keras-tf         Keras 3 on TensorFlow (needs tensorflow; --tf-python may name
                   the interpreter of another environment that has it)

    python -m benchmarks.train_throughput --batch-size 128 --rounds 5
    python -m benchmarks.train_throughput --pages both --variants jax-im2col-f32  # huge pages A/B
    python -m benchmarks.train_throughput --variants jax-im2col-f32 keras-tf \\
        --tf-python /path/to/venv-with-tensorflow/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from benchmarks.workers import Worker, rounds_parser
from experiments.machine import cpu_model
from experiments.markdown import spread


def jax_variant(conv_impl: str, dtype: str, batch: int) -> Callable[[], None]:
  """A closure that runs one Flax train step (and blocks until it is done)."""
  from benchmarks.article_step import article_optimizer, step_runner  # noqa: PLC0415

  return step_runner(article_optimizer(True), batch, dtype=dtype, conv_impl=conv_impl)


def torch_variant(batch: int) -> Callable[[], None]:
  import torch  # noqa: PLC0415 -- optional peer

  torch.manual_seed(0)
  model = torch.nn.Sequential(
      torch.nn.Conv2d(3, 128, 3), torch.nn.ReLU(), torch.nn.Conv2d(128, 128, 3),
      torch.nn.ReLU(), torch.nn.Conv2d(128, 128, 3), torch.nn.ReLU(), torch.nn.Flatten(),
      torch.nn.Linear(26 * 26 * 128, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  dense = model[7]
  images = torch.rand(batch, 3, 32, 32)
  labels = torch.randint(0, 10, (batch,))
  loss_fn = torch.nn.CrossEntropyLoss()

  def run():
    opt.zero_grad(set_to_none=True)
    loss_fn(model(images), labels).backward()
    opt.step()
    with torch.no_grad():  # torch Linear weight is (out, in): a neuron is a row, dim 0.
      dense.weight.copy_(torch.renorm(dense.weight, p=2, dim=0, maxnorm=3.0))
  return run


def keras_variant(backend: str, batch: int) -> Callable[[], None]:
  os.environ["KERAS_BACKEND"] = backend
  import keras  # noqa: PLC0415 -- optional peer

  model = keras.Sequential([
      keras.Input((32, 32, 3)),
      keras.layers.Conv2D(128, 3, activation="relu"),
      keras.layers.Conv2D(128, 3, activation="relu"),
      keras.layers.Conv2D(128, 3, activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(1024, activation="relu",
                         kernel_constraint=keras.constraints.MaxNorm(3.0)),
      keras.layers.Dense(10, activation="softmax"),
  ])
  model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
  images = np.random.default_rng(0).random((batch, 32, 32, 3), np.float32)
  labels = np.random.default_rng(1).integers(0, 10, batch)

  def run():
    model.train_on_batch(images, labels)
  return run


VARIANTS: dict[str, Callable[[int], Callable[[], None]]] = {
    "jax-xla-f32": lambda b: jax_variant("xla", "float32", b),
    "jax-im2col-f32": lambda b: jax_variant("im2col", "float32", b),
    "jax-im2col-bf16": lambda b: jax_variant("im2col", "bfloat16", b),
    "torch": torch_variant,
    "keras-jax": lambda b: keras_variant("jax", b),
    "keras-tf": lambda b: keras_variant("tensorflow", b),
}


def worker(variant: str, batch: int) -> None:
  """Builds one variant, says ``ready``, then answers ``run N`` with seconds/step."""
  run = VARIANTS[variant](batch)
  run()  # compile and warm up
  print("ready", flush=True)
  for line in sys.stdin:
    steps = int(line.split()[1])
    start = time.perf_counter()
    for _ in range(steps):
      run()
    print((time.perf_counter() - start) / steps, flush=True)


# GLIBC_TUNABLES for malloc's pages: transparent huge pages, or the environment
# as it is (glibc's default 4 KiB pages unless the caller set something).
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def start_worker(variant: str, batch: int, python: str, huge_pages: bool) -> Worker:
  """One variant's process; ``request("run N")`` answers its seconds per step."""
  label = f"{variant} (huge pages)" if huge_pages else variant
  env = dict(os.environ, GLIBC_TUNABLES=HUGE_PAGES) if huge_pages else None
  return Worker(label, [python, "-m", "benchmarks.train_throughput", "--worker", variant,
                        "--batch-size", str(batch)], env=env)


def main(argv=None) -> None:
  parser = rounds_parser(__doc__, rounds=5, steps=2, steps_help="steps per variant per round")
  parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                      default=["jax-xla-f32", "jax-im2col-f32", "jax-im2col-bf16", "torch"])
  parser.add_argument("--tf-python", default=sys.executable,
                      help="Python interpreter for keras-tf (an environment with tensorflow)")
  parser.add_argument("--pages", choices=["default", "huge", "both"], default="default",
                      help="malloc's pages in every worker: the environment's (glibc's "
                           "default 4 KiB pages), transparent huge pages, or each variant "
                           "once with each (an A/B of page-fault costs)")
  parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.batch_size < 1 or args.rounds < 1 or args.steps < 1:
    parser.error("--batch-size, --rounds and --steps must be positive")
  if args.worker:
    worker(args.worker, args.batch_size)
    return

  workers = []
  try:
    huge = {"default": [False], "huge": [True], "both": [False, True]}[args.pages]
    for name in args.variants:
      python = args.tf_python if name == "keras-tf" else sys.executable
      workers.extend(start_worker(name, args.batch_size, python, h) for h in huge)
    times: dict[str, list[float]] = {w.label: [] for w in workers}
    for _ in range(args.rounds):
      for w in workers:
        times[w.label].append(float(w.request(f"run {args.steps}")))
  finally:
    for w in workers:
      w.close()

  import jax  # noqa: PLC0415
  print(f"# train-step throughput | {datetime.date.today()} | jax {jax.__version__} | "
        f"{cpu_model()} {jax.devices()[0].device_kind} | batch {args.batch_size} | "
        f"{args.rounds} rounds x {args.steps} steps, interleaved, one process per variant")
  first = workers[0].label
  print(f"| variant | s/step (median) | img/s | ratio to {first} (median, min..max) |")
  print("|---|---|---|---|")
  for name in times:
    ratios = [a / b for a, b in zip(times[first], times[name])]
    med = statistics.median(times[name])
    print(f"| {name} | {med:.2f} | {args.batch_size / med:.1f} | "
          f"{spread(ratios, '.2f', 'x')} |")


if __name__ == "__main__":
  main()
