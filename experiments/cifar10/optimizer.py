"""The article's optimizer: Adam with Keras's legacy decay, then max-norm.

Keras's legacy optimizers took a ``decay`` argument and used
``lr_t = lr / (1 + decay * t)``, ``t`` being the optimizer's step count
(0 for the first update). The article used ``Adam(lr=1e-4, decay=1e-6)`` and
``kernel_constraint=max_norm(3.)`` on the Dense(1024) layer. Keras applies a
constraint right after each update, so ``max_norm`` goes last in the chain.
``optimizer="sgd"`` swaps Adam for SGD with momentum (same schedule), for the
high-learning-rate experiments.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

import maxnorm_jax as mnj
from experiments.cifar10.configs import Config

__all__ = ["keras_inverse_time_decay", "make_optimizer"]

# Parameter paths (key paths joined by "/") constrained by `constrain="dense1"`.
ARTICLE_CONSTRAINED = r"^dense1/kernel$"


def keras_inverse_time_decay(learning_rate: float, decay: float) -> optax.Schedule:
  """Keras's legacy ``decay``: ``count -> learning_rate / (1 + decay * count)``."""
  def schedule(count):
    return learning_rate / (1.0 + decay * jnp.asarray(count, jnp.float32))
  return schedule


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """``adam(schedule)`` (or ``sgd(schedule, momentum)``), followed by ``max_norm``
  unless ``config.max_norm`` is None."""
  schedule = keras_inverse_time_decay(config.learning_rate, config.lr_decay)
  if config.optimizer == "sgd":
    base = optax.sgd(schedule, momentum=config.momentum or None)
  else:
    base = optax.adam(schedule, eps=config.adam_eps)
  if config.max_norm is None:
    return optax.chain(base)
  # mask=None constrains every kernel (leaves of rank >= 2); biases are never constrained.
  mask = mnj.paths_matching(ARTICLE_CONSTRAINED) if config.constrain == "dense1" else None
  return optax.chain(base, mnj.max_norm(config.max_norm, mask=mask))
