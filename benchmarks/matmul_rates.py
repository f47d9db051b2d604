"""GFLOP/s of the matrix products inside the article's train step, in one run.

With im2col, the step's FLOPs are nine matrix products: forward, input-gradient
and weight-gradient for conv2, conv3 and Dense(1024) (conv1's are tiny). This
times each at the step's own shapes (batch 128 by default), in float32 and in
bfloat16 with float32 accumulation (``preferred_element_type=float32``; a
bfloat16 *output* takes a much slower path on XLA:CPU), so the step's time can
be compared with what its matmuls alone cost.

    python -m benchmarks.matmul_rates --batch-size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from experiments.machine import cpu_model


def shapes(batch: int) -> dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
  """Name -> (lhs shape, rhs shape, contracting dims) of each product."""
  conv2_rows, conv3_rows, k = batch * 28 * 28, batch * 26 * 26, 9 * 128
  dense_in = 26 * 26 * 128
  return {
      "conv2 forward (patches @ W)": ((conv2_rows, k), (k, 128), (1, 0)),
      "conv2 input grad (G @ W^T)": ((conv2_rows, 128), (k, 128), (1, 1)),
      "conv2 weight grad (patches^T @ G)": ((conv2_rows, k), (conv2_rows, 128), (0, 0)),
      "conv3 forward": ((conv3_rows, k), (k, 128), (1, 0)),
      "conv3 input grad": ((conv3_rows, 128), (k, 128), (1, 1)),
      "conv3 weight grad": ((conv3_rows, k), (conv3_rows, 128), (0, 0)),
      "dense1 forward (x @ W)": ((batch, dense_in), (dense_in, 1024), (1, 0)),
      "dense1 input grad (G @ W^T)": ((batch, 1024), (dense_in, 1024), (1, 1)),
      "dense1 weight grad (x^T @ G)": ((batch, dense_in), (batch, 1024), (0, 0)),
  }


def time_product(lhs_shape, rhs_shape, dims, dtype, repeats: int) -> tuple[float, float]:
  """(median seconds, GFLOP/s) of one product, compiled once, float32 output."""
  lhs = jax.random.normal(jax.random.key(0), lhs_shape).astype(dtype)
  rhs = jax.random.normal(jax.random.key(1), rhs_shape).astype(dtype)
  dimension_numbers = (((dims[0],), (dims[1],)), ((), ()))
  product = jax.jit(lambda a, b: lax.dot_general(
      a, b, dimension_numbers, preferred_element_type=jnp.float32)).lower(lhs, rhs).compile()
  out = product(lhs, rhs).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(lhs, rhs).block_until_ready()
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  flops = 2 * out.size * lhs_shape[dims[0]]
  return seconds, flops / seconds / 1e9


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  if args.batch_size < 1 or args.repeats < 1:
    parser.error("--batch-size and --repeats must be positive")
  print(f"# matmul rates | {datetime.date.today()} | jax {jax.__version__} | "
        f"{jax.devices()[0].device_kind} x{jax.device_count()} | {cpu_model()} | "
        f"batch {args.batch_size} | median of {args.repeats}")
  print("| product | lhs x rhs | f32 ms | f32 GFLOP/s | bf16->f32 ms | bf16->f32 GFLOP/s |")
  print("|---|---|---|---|---|---|")
  totals = [0.0, 0.0]
  for name, (lhs, rhs, dims) in shapes(args.batch_size).items():
    f32 = time_product(lhs, rhs, dims, jnp.float32, args.repeats)
    bf16 = time_product(lhs, rhs, dims, jnp.bfloat16, args.repeats)
    totals[0] += f32[0]
    totals[1] += bf16[0]
    print(f"| {name} | {'x'.join(map(str, lhs))} , {'x'.join(map(str, rhs))} | "
          f"{1e3 * f32[0]:.0f} | {f32[1]:.0f} | {1e3 * bf16[0]:.0f} | {bf16[1]:.0f} |",
          flush=True)
  print(f"| **all nine** | | {1e3 * totals[0]:.0f} | | {1e3 * totals[1]:.0f} | |")


if __name__ == "__main__":
  main()
