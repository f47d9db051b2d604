"""The article's optimizer: Keras's legacy inverse-time decay, and where max-norm applies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.cifar10.configs import get_config
from experiments.cifar10.optimizer import (
    keras_inverse_time_decay,
    learning_rate_at,
    make_optimizer,
)


def test_schedule_matches_kerass_formula():
  schedule = keras_inverse_time_decay(1e-4, 1e-6)
  for t in (0, 1, 351, 3520, 10**6):
    np.testing.assert_allclose(float(schedule(t)), 1e-4 / (1 + 1e-6 * t), rtol=1e-6)
  assert float(schedule(jnp.int32(0))) == pytest.approx(1e-4)


def test_host_side_rate_equals_the_device_schedule_bit_for_bit():
  # The logs compute the rate on the host; it must be the rate the optimizer used.
  for lr, decay in ((1e-4, 1e-6), (3e-4, 1e-6), (0.1, 0.5), (1e-3, 0.0)):
    schedule = keras_inverse_time_decay(lr, decay)
    for t in (0, 1, 351, 3519, 3520, 123_457):
      assert learning_rate_at(lr, decay, t) == float(schedule(t)), (lr, decay, t)


def test_adam_steps_by_the_decayed_rate():
  # With a constant gradient and no constraint, every Adam update is
  # -lr_t * g / (|g| + eps) = -lr_t (to within eps), so the updates trace the schedule.
  config = get_config("article", learning_rate=0.1, lr_decay=0.5, max_norm=None)
  tx = make_optimizer(config)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  grads = {"w": jnp.ones(3)}
  for t in range(5):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 / (1 + 0.5 * t), rtol=1e-4)


def _kernels(rng):
  return {
      "conv1": {"kernel": jax.random.normal(rng, (3, 3, 3, 4)) * 10, "bias": jnp.ones(4) * 10},
      "dense1": {"kernel": jax.random.normal(rng, (16, 8)) * 10, "bias": jnp.ones(8) * 10},
  }


@pytest.mark.parametrize("constrain, constrained", [
    ("dense1", {"dense1/kernel"}),
    ("all", {"dense1/kernel", "conv1/kernel"}),
])
def test_max_norm_constrains_the_chosen_kernels_only(constrain, constrained):
  params = _kernels(jax.random.key(0))
  tx = make_optimizer(get_config("article", max_norm=3.0, constrain=constrain))
  updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for layer in ("conv1", "dense1"):
    kernel = new[layer]["kernel"]
    norms = jnp.sqrt(jnp.sum(kernel**2, axis=tuple(range(kernel.ndim - 1))))
    if f"{layer}/kernel" in constrained:
      assert float(norms.max()) <= 3.0 * (1 + 1e-5)
    else:
      assert float(norms.max()) > 3.0
    np.testing.assert_array_equal(new[layer]["bias"], params[layer]["bias"])
  assert float(optax.tree_utils.tree_get(state, "fraction_at_bound")) == 1.0


def test_without_max_norm_there_is_no_telemetry():
  params = _kernels(jax.random.key(0))
  tx = make_optimizer(get_config("article", max_norm=None))
  _, state = tx.update(params, tx.init(params), params)
  assert optax.tree_utils.tree_get(state, "largest_norm") is None


def test_sgd_with_momentum_follows_the_heavy_ball_rule():
  # Constant gradient 1: velocity 1, 1 + m, 1 + m + m^2; update = -lr * velocity.
  config = get_config("article", optimizer="sgd", momentum=0.5, learning_rate=0.1,
                      lr_decay=0.0, max_norm=None)
  tx = make_optimizer(config)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  for expected in (1.0, 1.5, 1.75):
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * expected, rtol=1e-6)


def test_plain_sgd_with_zero_momentum():
  tx = make_optimizer(get_config("article", optimizer="sgd", momentum=0.0, learning_rate=0.1,
                                 lr_decay=0.0, max_norm=None))
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)
