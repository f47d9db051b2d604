"""How many passes over a kernel the optimizer update makes on TPU, by XLA:TPU's cost model.

The update is compiled for a compile-only TPU v5e (``libtpu``, no chip needed)
on the article's Dense(1024) kernel, ``(86528, 1024)``, and the compiler's
"bytes accessed" of ``adam + max_norm`` is pinned against Adam's own: Adam and
``apply_updates`` make 7 passes over the kernel, and an exact projection needs
3 more (the norms ride along Adam's pass; a second pass reads the params and
writes them). Temporaries may hold per-neuron vectors, never a kernel, with
and without the params and optimizer state donated (as a train step does).
"""

import os

import jax
import jax.numpy as jnp
import optax
import pytest

import maxnorm_jax as mnj

pytest.importorskip(
    "libtpu", reason="compiling for TPU needs libtpu: pip install 'jax[tpu]' (same version as jax)")

KERNEL = (86528, 1024)
NEURON_VECTOR = KERNEL[1] * 4  # bytes of one float32 value per neuron
FLOOR = 10 / 7  # adam + max_norm + apply_updates against adam + apply_updates
TOLERANCE = 0.01


def _tpu_device():
  """One compile-only TPU v5e device."""
  from jax.experimental import topologies
  # Compiling needs no chip, so several processes may load libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  return topologies.get_topology_desc("v5e:2x2", "tpu").devices[0]


@pytest.fixture(scope="module")
def compile_step():
  """Compiles ``params -> new params`` for TPU; returns ``(bytes accessed, temp bytes)``."""
  sharding = jax.sharding.SingleDeviceSharding(_tpu_device())

  def compile_(tx, dtype=jnp.float32, project_after=False, donate=False):
    params = {"kernel": jax.ShapeDtypeStruct(KERNEL, dtype, sharding=sharding)}
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                         jax.eval_shape(tx.init, params))

    def step(grads, params, state):
      updates, state = tx.update(grads, state, params)
      new = optax.apply_updates(params, updates)
      return (mnj.project_max_norm(new, 3.0) if project_after else new), state

    jitted = jax.jit(step, donate_argnums=(1, 2) if donate else ())
    compiled = jitted.trace(params, params, state).lower().compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["bytes accessed"], compiled.memory_analysis().temp_size_in_bytes

  return compile_


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_adam_plus_max_norm_is_at_the_two_pass_floor(compile_step, dtype):
  adam_bytes, _ = compile_step(optax.adam(1e-4), dtype)
  bytes_, temp = compile_step(optax.chain(optax.adam(1e-4), mnj.max_norm(3.0)), dtype)
  assert bytes_ / adam_bytes <= FLOOR + TOLERANCE, (bytes_, adam_bytes)
  assert temp <= 64 * NEURON_VECTOR, f"{temp / 1e6:.1f} MB of temporaries"


def test_donated_step_is_at_the_floor_too(compile_step):
  """With donated buffers, XLA:TPU would keep Adam's update between the passes if
  the projection read it apart from the params; it reads their sum."""
  adam_bytes, adam_temp = compile_step(optax.adam(1e-4), donate=True)
  bytes_, temp = compile_step(optax.chain(optax.adam(1e-4), mnj.max_norm(3.0)), donate=True)
  assert bytes_ / adam_bytes <= FLOOR + TOLERANCE, (bytes_, adam_bytes)
  assert temp - adam_temp <= 64 * NEURON_VECTOR, f"{temp / 1e6:.1f} MB of temporaries"


def test_project_max_norm_after_apply_updates_adds_two_passes(compile_step):
  adam_bytes, _ = compile_step(optax.adam(1e-4))
  bytes_, temp = compile_step(optax.adam(1e-4), project_after=True)
  assert bytes_ / adam_bytes <= 9 / 7 + TOLERANCE, (bytes_, adam_bytes)
  assert temp <= 64 * NEURON_VECTOR, f"{temp / 1e6:.1f} MB of temporaries"
