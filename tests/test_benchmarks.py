"""The benchmarks measure what the train step actually computes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import matmul_rates
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
