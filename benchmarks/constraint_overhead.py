"""What does max_norm add to a train step? Adam alone vs Adam + max_norm, A/B.

Both steps train the article's CNN on one synthetic CIFAR-shaped batch held on
the device, so only the optimizer differs. Beside the timings, which this
noisy machine blurs, the last column does not depend on noise: the extra bytes the constrained
step reads and writes according to XLA's cost analysis of the compiled step,
in units of one pass (read or write) over the constrained kernels. On CPU, max_norm takes
the rescaled sums of squares (for neurons whose plain sum overflows or underflows) under a
``lax.cond`` over per-neuron vectors, and XLA's cost analysis counts both branches, so this
column is an upper bound; ``python -m benchmarks.constraint_versions`` times the common case
against a previous version. The two variants are timed in
interleaved rounds in one process (this machine is noisy), and the report
gives, per batch size, the median step time of each and the median and spread
(min..max) of the per-round ratio B/A.

    python -m benchmarks.constraint_overhead                    # article: Dense(1024) kernel only
    python -m benchmarks.constraint_overhead --constrain all --batch-sizes 128 --rounds 9
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import maxnorm_jax as mnj
from benchmarks.article_step import jitted_train_step
from experiments.cifar10.models import CNN
from experiments.machine import cpu_model


def measure(batch_size: int, rounds: int, steps: int, constrain: str, dtype: str
            ) -> dict[str, object]:
  graphdef, state = nnx.split(CNN(dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
  params0 = nnx.to_pure_dict(state)
  mask = mnj.paths_matching(r"^dense1/kernel$") if constrain == "dense1" else None
  variants = {
      "adam": optax.adam(1e-4),
      "adam+max_norm": optax.chain(optax.adam(1e-4), mnj.max_norm(3.0, mask=mask)),
  }
  key = jax.random.key(1)
  images = jax.random.uniform(key, (batch_size, 32, 32, 3), jnp.float32)
  labels = jax.random.randint(key, (batch_size,), 0, 10)
  runs = {}
  for name, tx in variants.items():
    params = jax.tree.map(jnp.copy, params0)
    opt_state = tx.init(params)
    step = jitted_train_step(graphdef, tx).lower(params, opt_state, images, labels).compile()
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    params, opt_state = step(params, opt_state, images, labels)  # warm up
    jax.block_until_ready(params)
    runs[name] = {"step": step, "params": params, "opt_state": opt_state, "times": [],
                  "bytes": cost["bytes accessed"]}
  for _ in range(rounds):
    for run in runs.values():
      params, opt_state = run["params"], run["opt_state"]
      start = time.perf_counter()
      for _ in range(steps):
        params, opt_state = run["step"](params, opt_state, images, labels)
      jax.block_until_ready(params)
      run["times"].append((time.perf_counter() - start) / steps)
      run["params"], run["opt_state"] = params, opt_state
  # One pass = reading or writing every constrained kernel once (float32).
  kernels = ([params0["dense1"]["kernel"]] if constrain == "dense1" else
             [x for x in jax.tree.leaves(params0) if x.ndim >= 2])
  kernel_bytes = 4 * sum(x.size for x in kernels)
  base, constrained = runs["adam"]["times"], runs["adam+max_norm"]["times"]
  ratios = [b / a for a, b in zip(base, constrained)]
  return {
      "batch": batch_size,
      "adam_ms": 1e3 * statistics.median(base),
      "max_norm_ms": 1e3 * statistics.median(constrained),
      "overhead_median": statistics.median(ratios) - 1,
      "overhead_min": min(ratios) - 1,
      "overhead_max": max(ratios) - 1,
      "img_per_s": batch_size / statistics.median(base),
      "extra_passes": (runs["adam+max_norm"]["bytes"] - runs["adam"]["bytes"]) / kernel_bytes,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
  parser.add_argument("--rounds", type=int, default=7, help="interleaved A/B rounds")
  parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
  parser.add_argument("--constrain", choices=["dense1", "all"], default="dense1")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  args = parser.parse_args(argv)
  if min(args.batch_sizes) < 1 or args.rounds < 1 or args.steps < 1:
    parser.error("--batch-sizes, --rounds and --steps must be positive")
  print(f"# constraint overhead | {datetime.date.today()} | jax {jax.__version__} | "
        f"{jax.devices()[0].device_kind} x{jax.device_count()} | {cpu_model()} | "
        f"constrain={args.constrain} dtype={args.dtype} rounds={args.rounds} steps={args.steps}")
  print("| batch | Adam ms/step | Adam+max_norm ms/step | overhead (median) | "
        "spread (min..max) | extra passes over the kernel (XLA cost analysis, both branches "
        "of the rescaled-sums cond) |")
  print("|---|---|---|---|---|---|")
  for batch in args.batch_sizes:
    r = measure(batch, args.rounds, args.steps, args.constrain, args.dtype)
    print(f"| {r['batch']} | {r['adam_ms']:.0f} | {r['max_norm_ms']:.0f} | "
          f"{100 * r['overhead_median']:+.1f}% | {100 * r['overhead_min']:+.1f}% .. "
          f"{100 * r['overhead_max']:+.1f}% | {r['extra_passes']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
