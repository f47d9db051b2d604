"""The train step that every benchmark times: the article's CNN, one optax update.

Softmax cross-entropy on a batch, gradients, ``tx.update`` with the params
(so params-aware transformations such as ``max_norm`` work), then
``optax.apply_updates``; jitted with the params and optimizer state donated,
as the training pipeline does.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx


def jitted_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
  """``(params, opt_state, images, labels) -> (params, opt_state)``, jitted and donated."""
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return jax.jit(step, donate_argnums=(0, 1))
