"""The benchmarks measure what the train step actually computes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import matmul_rates, page_faults
from experiments.cifar10.models import CNN


def _products(jaxpr) -> list[tuple[tuple, int]]:
  """(sorted operand shapes, contracted size) of every dot_general, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      (contract, _), _ = eqn.params["dimension_numbers"]
      found.append((tuple(sorted((lhs, rhs))), math.prod(lhs[d] for d in contract)))
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None:
        found += _products(getattr(inner, "jaxpr", inner))
  return found


def test_matmul_rates_times_the_train_steps_own_products():
  batch = 4
  graphdef, state = nnx.split(CNN(conv_impl="im2col", rngs=nnx.Rngs(0)))
  images, labels = jnp.zeros((batch, 32, 32, 3)), jnp.zeros((batch,), jnp.int32)

  def loss(params):
    logits = nnx.merge(graphdef, params)(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  in_step = _products(jax.make_jaxpr(jax.grad(loss))(nnx.to_pure_dict(state)).jaxpr)
  benchmarked = [(tuple(sorted((lhs, rhs))), lhs[dims[0]])
                 for lhs, rhs, dims in matmul_rates.shapes(batch).values()]
  for product in benchmarked:
    assert product in in_step, product

  def flops(products):
    total = 0
    for (a, b), contracted in products:
      total += 2 * math.prod(a) * math.prod(b) // contracted
    return total
  # The nine benchmarked products are nearly all of the step's matmul work.
  assert flops(benchmarked) >= 0.99 * flops(in_step)


def test_page_faults_worker_notices_a_library_that_was_not_preloaded():
  maps = ("7f0000000000-7f0000001000 r-xp 00000000 fe:01 123 "
          "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n"
          "7f0000002000-7f0000003000 rw-p 00000000 00:00 0\n")
  env = page_faults.malloc_env("tcmalloc", base={})
  assert page_faults.preloaded_missing(env, maps) == []
  env = page_faults.malloc_env("jemalloc", base={})
  assert page_faults.preloaded_missing(env, maps) == ["libjemalloc.so.2"]
  assert page_faults.preloaded_missing(page_faults.malloc_env("default", base={}), maps) == []


def test_page_faults_report_pairs_rounds():
  def rec(seconds, faults=0.0):
    return {"seconds": seconds, "faults": faults, "cpu": 2 * seconds, "sys": 0.0,
            "peak_rss_mib": 1.0}
  runs = {"default": {"adam": [rec(2.0), rec(4.0)], "adam+max_norm": [rec(2.2), rec(4.8)]},
          "tcmalloc": {"adam": [rec(1.0), rec(2.0)], "adam+max_norm": [rec(1.1), rec(2.1)]}}
  text = "\n".join(page_faults.report(runs, batch=128))
  # Ratios are per round: default 2.2/2.0 and 4.8/4.0; img/s ratio 2.2/1.1 and 4.8/2.1.
  assert "| default | +15.0% (+10.0%..+20.0%) | +15.0% (+10.0%..+20.0%) |" in text
  assert "| tcmalloc | +7.5% (+5.0%..+10.0%) | +7.5% (+5.0%..+10.0%) |" in text
  assert "| tcmalloc | Adam + max_norm | 1.60 | 80.0 | 2.14 (2.00..2.29) |" in text


def test_the_device_check_runs_quick_on_cpu(capsys):
  from benchmarks import device_check  # noqa: PLC0415 -- imports the whole pipeline

  assert device_check.main(["--quick"]) == 0
  out = capsys.readouterr().out
  for heading in ("## 1 and 3. Train step", "## 2. max_norm's overhead",
                  "## 4. The recipe end to end"):
    assert heading in out
  for row in ("| float32 + max_norm |", "| bfloat16 + max_norm |", "| float32, Adam alone |"):
    assert row in out
  assert "Adam + max_norm over Adam alone, per round: median" in out
