"""The train step that every benchmark times: the training pipeline's own.

:func:`jitted_train_step` wraps :func:`experiments.cifar10.train.train_step`
(softmax cross-entropy, gradients, ``tx.update`` with the params, then
``optax.apply_updates``) for a batch held on the device, jitted with the params
and optimizer state donated, as the pipeline does. The pipeline's slicing of
the batch out of the on-device data set is not included. :func:`step_runner`
wraps it, compiled, on a synthetic batch, for the scripts that time steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.cifar10.configs import get_config
from experiments.cifar10.input_pipeline import Batch
from experiments.cifar10.models import CNN
from experiments.cifar10.optimizer import make_optimizer
from experiments.cifar10.train import TrainState, train_step

__all__ = ["article_optimizer", "jitted_train_step", "step_runner"]


def jitted_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
  """``(params, opt_state, images, labels) -> (params, opt_state)``, jitted and donated."""
  def step(params, opt_state, images, labels):
    batch = Batch(images, labels, jnp.ones(labels.shape, jnp.float32))
    state, _ = train_step(TrainState(params, opt_state), batch, graphdef=graphdef, tx=tx)
    return state.params, state.opt_state
  return jax.jit(step, donate_argnums=(0, 1))


def article_optimizer(constrained: bool = True) -> optax.GradientTransformation:
  """The ``article`` preset's optimizer, the one training uses: Adam(1e-4) with Keras's
  legacy decay, followed by max_norm(3) on the Dense(1024) kernel when ``constrained``."""
  return make_optimizer(get_config("article", max_norm=3.0 if constrained else None))


def step_runner(tx: optax.GradientTransformation, batch: int, *, dtype: str = "float32",
                conv_impl: str = "auto", conv_features: int = 128,
                dense_features: int = 1024) -> Callable[[], None]:
  """A closure that runs one compiled train step of the article's network on a fixed
  synthetic batch and blocks until it is done. Compiled ahead; its ``flops`` attribute is
  XLA's FLOP count of one step per image (None when XLA gives none)."""
  graphdef, state = nnx.split(CNN(conv_features=conv_features, dense_features=dense_features,
                                  conv_impl=conv_impl, dtype=jnp.dtype(dtype),
                                  rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  key = jax.random.key(1)
  images = jax.random.uniform(key, (batch, 32, 32, 3), jnp.float32)
  labels = jax.random.randint(key, (batch,), 0, 10)
  carry = [params, tx.init(params)]
  step = jitted_train_step(graphdef, tx).lower(*carry, images, labels).compile()
  cost = step.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = (cost or {}).get("flops")

  def run() -> None:
    carry[0], carry[1] = step(*carry, images, labels)
    jax.block_until_ready(carry[0])
  run.flops = flops / batch if flops else None  # type: ignore[attr-defined]
  return run
