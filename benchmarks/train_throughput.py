"""Train-step throughput of the article's network: our variants and peers, in one run.

Each variant trains the article's CNN (88.9M parameters; Adam + max-norm on the
Dense(1024) kernel) on a synthetic CIFAR-shaped batch. All variants are timed
in interleaved rounds in one process, so machine noise hits them alike; the
table gives median img/s and the ratio to the first variant.

Variants:
  jax-xla-f32      Flax NNX + optax + maxnorm_jax, XLA's native convolutions, float32
  jax-im2col-f32   the same, convolutions as im2col + matmul (the CPU default)
  jax-im2col-bf16  the same, bfloat16 compute, float32 params and Adam state
  torch            PyTorch eager, Adam, then torch.renorm on the Dense(1024) weight
  keras-jax        Keras 3 on its JAX backend, Adam, MaxNorm(3) (needs keras)

    python -m benchmarks.train_throughput --batch-size 128 --rounds 5
    python -m benchmarks.train_throughput --variants jax-xla-f32 jax-im2col-f32
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import maxnorm_jax as mnj
from experiments.cifar10.models import CNN


def jax_variant(conv_impl: str, dtype: str, batch: int) -> Callable[[], None]:
  """A closure that runs one Flax train step (and blocks until it is done)."""
  graphdef, state = nnx.split(CNN(conv_impl=conv_impl, dtype=jnp.dtype(dtype),
                                  rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  tx = optax.chain(optax.adam(1e-4),
                   mnj.max_norm(3.0, mask=mnj.paths_matching(r"^dense1/kernel$")))
  key = jax.random.key(1)
  images = jax.random.uniform(key, (batch, 32, 32, 3), jnp.float32)
  labels = jax.random.randint(key, (batch,), 0, 10)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  step = jax.jit(step.__wrapped__, donate_argnums=(0, 1))
  carry = [params, tx.init(params)]

  def run():
    carry[0], carry[1] = step(*carry)
    jax.block_until_ready(carry[0])
  return run


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


def keras_variant(batch: int) -> Callable[[], None]:
  import os  # noqa: PLC0415
  os.environ.setdefault("KERAS_BACKEND", "jax")
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
    "keras-jax": keras_variant,
}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
  parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                      default=["jax-xla-f32", "jax-im2col-f32", "jax-im2col-bf16", "torch"])
  args = parser.parse_args(argv)
  if args.batch_size < 1 or args.rounds < 1 or args.steps < 1:
    parser.error("--batch-size, --rounds and --steps must be positive")

  runs = {}
  for name in args.variants:
    runs[name] = VARIANTS[name](args.batch_size)
    runs[name]()  # compile and warm up
  times: dict[str, list[float]] = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        run()
      times[name].append((time.perf_counter() - start) / args.steps)

  print(f"# train-step throughput | {datetime.date.today()} | jax {jax.__version__} | "
        f"{platform.machine()} {jax.devices()[0].device_kind} | batch {args.batch_size} | "
        f"{args.rounds} rounds x {args.steps} steps, interleaved")
  first = args.variants[0]
  print(f"| variant | s/step (median) | img/s | ratio to {first} (median, min..max) |")
  print("|---|---|---|---|")
  for name in args.variants:
    ratios = [a / b for a, b in zip(times[first], times[name])]
    med = statistics.median(times[name])
    print(f"| {name} | {med:.2f} | {args.batch_size / med:.1f} | "
          f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f}) |")


if __name__ == "__main__":
  main()
