"""Memory of one train step of the article's network, from XLA's own accounting.

For each variant the step (forward, backward, Adam [+ max_norm], parameter
update; params and optimizer state donated) is compiled and XLA's
``memory_analysis()`` is read: arguments, outputs, temporaries, and the bytes
that donation lets the outputs reuse. Peak ~= arguments + outputs - aliased +
temporaries. Nothing is executed, so the figures do not depend on machine
noise. The peak RSS of the process, which includes what JAX itself holds, is
printed for reference after a real step of the last variant.

    python -m benchmarks.step_memory --batch-size 128
"""

from __future__ import annotations

import argparse
import datetime
import resource

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import maxnorm_jax as mnj
from benchmarks.article_step import jitted_train_step
from experiments.cifar10.models import CNN

MiB = 2 ** 20


def compiled_step(constrained: bool, dtype: str, conv_impl: str, batch: int):
  graphdef, state = nnx.split(CNN(conv_impl=conv_impl, dtype=jnp.dtype(dtype),
                                  rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  tx = optax.adam(1e-4)
  if constrained:
    tx = optax.chain(tx, mnj.max_norm(3.0, mask=mnj.paths_matching(r"^dense1/kernel$")))
  images = jnp.zeros((batch, 32, 32, 3), jnp.float32)
  labels = jnp.zeros((batch,), jnp.int32)

  opt_state = tx.init(params)
  jitted = jitted_train_step(graphdef, tx)
  return jitted, jitted.lower(params, opt_state, images, labels).compile(), (
      params, opt_state, images, labels)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error("--batch-size must be positive")
  print(f"# train-step memory | {datetime.date.today()} | jax {jax.__version__} | "
        f"{jax.devices()[0].device_kind} | batch {args.batch_size} | 88,914,698 fp32 params")
  print("| variant | arguments MiB | outputs MiB | aliased (donated) MiB | temporaries MiB | "
        "peak estimate MiB |")
  print("|---|---|---|---|---|---|")
  last = None
  for constrained in (False, True):
    for dtype, conv_impl in (("float32", "xla"), ("float32", "im2col"), ("bfloat16", "im2col")):
      jitted, compiled, inputs = compiled_step(constrained, dtype, conv_impl, args.batch_size)
      m = compiled.memory_analysis()
      peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
              + m.temp_size_in_bytes)
      name = f"Adam{' + max_norm' if constrained else ''}, {dtype}, {conv_impl}"
      print(f"| {name} | {m.argument_size_in_bytes / MiB:.0f} | "
            f"{m.output_size_in_bytes / MiB:.0f} | {m.alias_size_in_bytes / MiB:.0f} | "
            f"{m.temp_size_in_bytes / MiB:.0f} | {peak / MiB:.0f} |", flush=True)
      last = (jitted, inputs)
  jitted, inputs = last
  jax.block_until_ready(jitted(*inputs))
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
  print(f"\nPeak RSS of this process after one real step: {rss:.0f} MiB (all variants "
        "built so far, JAX runtime included).")


if __name__ == "__main__":
  main()
