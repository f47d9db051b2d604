"""What waiting for the device every step costs: the training loop, with and without.

A tiny network, where dispatch and host round trips dominate the step, trained
by the pipeline's own compiled step on synthetic data on the device, one epoch
per round, in interleaved rounds:

* ``read every step``: after each step the host reads that step's loss (what a
  plain ``float(loss)`` progress bar does), so it waits for the device every step;
* ``pipeline loop``: :func:`experiments.cifar10.epoch_loop.train_epoch`, which
  reads one small report every ``READ_EVERY`` steps, one step behind the device.

It prints steps/s of each and the per-round ratio (median, min..max).

    python -m benchmarks.host_reads --rounds 7 --steps 300
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.cifar10 import epoch_loop, input_pipeline, metrics, sharding, train
from experiments.cifar10.configs import get_config
from experiments.machine import cpu_model
from experiments.markdown import spread

__all__ = ["main"]


class _Source:
  def __init__(self, n: int):
    rng = np.random.default_rng(0)
    self.images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    self.labels = rng.integers(0, 10, n).astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitems__(self, indices):
    return [{"image": self.images[i], "label": self.labels[i]} for i in indices]


def _setup(steps: int, batch_size: int):
  config = get_config("article", conv_features=2, dense_features=8, batch_size=batch_size,
                      num_devices=1)
  mesh = sharding.make_mesh(1)
  n = steps * batch_size
  data = input_pipeline.shard_rows(_Source(n), np.arange(n), mesh)
  graphdef, state, tx = train.create_train_state(config, jax.random.key(0))
  state_sharding = sharding.state_shardings(state, mesh)
  state = jax.device_put(state, state_sharding)
  train_fn, _, _ = train.build_steps(config, graphdef, tx, mesh, state_sharding)
  order = input_pipeline.epoch_order(jax.random.key(1), 1, n, batch_size)
  totals = metrics.zeros(with_telemetry=True)
  train_fn = train_fn.lower(state, totals, data, order, jnp.int32(0), jnp.int32(1)).compile()
  return train_fn, state, data, order


def _read_every_step(train_fn, state, data, order, steps):
  totals = metrics.zeros(with_telemetry=True)
  for i in range(steps):
    state, totals, report = train_fn(state, totals, data, order, jnp.int32(i), jnp.int32(i + 1))
    float(report.batch["loss"])  # The host waits for this step.
  return state


def _pipeline_loop(train_fn, state, data, order, steps):
  state, _, _ = epoch_loop.train_epoch(train_fn, state, metrics.zeros(with_telemetry=True), data,
                                   order, first_step=1, num_steps=steps, description="",
                                   disable_bar=True)
  return state


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.host_reads", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--steps", type=int, default=300, help="steps per round (one epoch)")
  p.add_argument("--batch-size", type=int, default=32)
  args = p.parse_args(argv)
  train_fn, state, data, order = _setup(args.steps, args.batch_size)
  loops: dict[str, Callable] = {"read every step": _read_every_step,
                                "pipeline loop": _pipeline_loop}
  seconds: dict[str, list[float]] = {name: [] for name in loops}
  for loop in loops.values():  # Warm up both.
    state = loop(train_fn, state, data, order, 5)
    jax.block_until_ready(state)
  for r in range(args.rounds):
    for name in (list(loops) if r % 2 == 0 else list(reversed(loops))):
      start = time.perf_counter()
      state = loops[name](train_fn, state, data, order, args.steps)
      jax.block_until_ready(state)
      seconds[name].append(time.perf_counter() - start)
  print(f"# host reads | {datetime.date.today()} | jax {jax.__version__} | "
        f"{jax.devices()[0].device_kind} ({cpu_model()}) | conv 2, dense 8, batch "
        f"{args.batch_size} | "
        f"{args.rounds} interleaved rounds of {args.steps} steps | READ_EVERY "
        f"{epoch_loop.READ_EVERY}")
  print("| loop | steps/s (median) | ratio to 'read every step', per round (median, min..max) |")
  print("|---|---|---|")
  base = seconds["read every step"]
  for name, values in seconds.items():
    ratios = [b / s for b, s in zip(base, values)]
    print(f"| {name} | {args.steps / statistics.median(values):,.0f} | "
          f"{spread(ratios, '.2f')} |")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

