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

import re

import jax.numpy as jnp
import numpy as np
import optax

import maxnorm_jax as mnj
from experiments.cifar10.configs import Config
from experiments.cifar10.models import DENSE1_KERNEL

__all__ = ["keras_inverse_time_decay", "learning_rate_at", "make_optimizer"]


def keras_inverse_time_decay(learning_rate: float, decay: float) -> optax.Schedule:
  """Keras's legacy ``decay``: ``count -> learning_rate / (1 + decay * count)``."""
  def schedule(count):
    return learning_rate / (1.0 + decay * jnp.asarray(count, jnp.float32))
  return schedule


def learning_rate_at(learning_rate: float, decay: float, count: int) -> float:
  """The rate of :func:`keras_inverse_time_decay` at step ``count``, computed on the host
  in float32 as the device does (so logging it needs no device read)."""
  one, rate = np.float32(1), np.float32(learning_rate)
  return float(rate / (one + np.float32(decay) * np.float32(count)))


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
  mask = (mnj.paths_matching(f"^{re.escape(DENSE1_KERNEL)}$") if config.constrain == "dense1"
          else None)
  return optax.chain(base, mnj.max_norm(config.max_norm, mask=mask))
