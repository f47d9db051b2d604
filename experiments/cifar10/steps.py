"""The jitted programs of a run: the train step, and the train and eval slices.

The model is split once (``nnx.split``) into a static graph and a pure dict of
parameters; the train step is a pure function ``(state, batch) -> (state,
metrics)`` over that dict, so it can be jitted, donated and sharded. Each slice
takes its batch out of the epoch's on-device order (:func:`build_steps`), so no
data crosses to the host during an epoch; :func:`compile_steps` compiles them
ahead of the first epoch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments.cifar10 import input_pipeline, metrics, sharding
from experiments.cifar10.configs import Config
from experiments.cifar10.epoch_loop import Report
from experiments.cifar10.input_pipeline import Batch, Split
from experiments.cifar10.models import CNN
from experiments.cifar10.optimizer import make_optimizer

__all__ = ["Compiled", "TrainState", "build_steps", "compile_steps", "create_train_state",
           "dropout_key", "train_step"]

Params = dict[str, Any]


class TrainState(NamedTuple):
  """What changes during training: the parameters and the optimizer state."""
  params: Params
  opt_state: optax.OptState


def create_train_state(config: Config, key: jax.Array
                       ) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
  """Initialises the model and optimizer; returns ``(graphdef, state, tx)``."""
  model = CNN(conv_features=config.conv_features, dense_features=config.dense_features,
              dropout=config.dropout, conv_dropout=config.conv_dropout,
              conv_impl=config.conv_impl,
              dtype=jnp.dtype(config.dtype), rngs=nnx.Rngs(params=key))
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  tx = make_optimizer(config)
  return graphdef, TrainState(params, tx.init(params)), tx


def _logits(graphdef: nnx.GraphDef, params: Params, images: jax.Array,
            dropout_key: jax.Array | None = None) -> jax.Array:
  return nnx.merge(graphdef, params)(images, dropout_key=dropout_key)


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
  """The dropout key of optimizer step ``step`` (1-based) of a run seeded ``seed``.

  A function of the two only, so a resumed run draws the same masks as an
  uninterrupted one with no random state to checkpoint.
  """
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _DROPOUT_STREAM), step)


_DROPOUT_STREAM = 0x64726F70  # Folded into the run's seed: dropout's own stream.


def train_step(state: TrainState, batch: Batch, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, dropout_key: jax.Array | None = None
               ) -> tuple[TrainState, metrics.Totals]:
  """One optimizer update on ``batch``; returns the new state and the batch's
  loss/accuracy sums plus the constraint's telemetry.

  The loss is the example-weighted mean ``sum(w * l) / sum(w)``, so padding
  examples (weight 0) of the last, partial batch do not count. ``dropout_key``
  drives the model's dropout layers (None: no dropout).
  """
  def loss_fn(params):
    logits = _logits(graphdef, params, batch.images, dropout_key)
    sums = metrics.batch_sums(logits, batch.labels, batch.weights)
    return sums["loss"] / sums["count"], sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state), {**sums, **metrics.telemetry(opt_state)}


def _train_slice(state: TrainState, totals: metrics.Totals, data: Split, order: jax.Array,
                 index: jax.Array, step_number: jax.Array, *, step: Callable, batch_size: int,
                 dtype: jnp.dtype, mesh: jax.sharding.Mesh, seed: int | None = None
                 ) -> tuple[TrainState, metrics.Totals, Report]:
  """Slices batch ``index`` of ``order`` out of ``data`` and trains on it as optimizer
  step ``step_number`` (1-based, over the whole run); returns the new state and
  totals, and the step's :class:`Report`. With ``seed``, the step's dropout key is
  :func:`dropout_key` of the two (None: the model has no dropout)."""
  batch = input_pipeline.batch_at(data, order, index, batch_size, dtype, mesh=mesh)
  key = None if seed is None else dropout_key(seed, step_number)
  state, step_metrics = step(state, batch, dropout_key=key)
  totals = metrics.accumulate(totals, step_metrics)
  count = step_metrics["count"]
  return state, totals, Report(
      {"loss": step_metrics["loss"] / count, "accuracy": step_metrics["correct"] / count,
       **{k: v for k, v in step_metrics.items() if k in metrics.TELEMETRY}},
      totals["loss"] / totals["count"])


def _eval_slice(params: Params, totals: metrics.Totals, data: Split, order: jax.Array,
                index: jax.Array, *, graphdef: nnx.GraphDef, batch_size: int, dtype: jnp.dtype,
                mesh: jax.sharding.Mesh) -> metrics.Totals:
  batch = input_pipeline.batch_at(data, order, index, batch_size, dtype, mesh=mesh)
  logits = _logits(graphdef, params, batch.images)
  return metrics.accumulate(totals, metrics.batch_sums(logits, batch.labels, batch.weights))


def build_steps(config: Config, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                mesh: jax.sharding.Mesh, state_sharding: Any
                ) -> tuple[Callable, Callable, int]:
  """The jitted train and eval slices of a run, and the eval batch size.

  ``train_fn(state, totals, data, order, index, step_number) -> (state, totals,
  Report)`` trains on batch ``index`` of ``order`` as optimizer step
  ``step_number`` (state and totals donated);
  ``eval_fn(params, totals, data, order, index) -> totals`` evaluates one.
  """
  dtype = jnp.dtype(config.dtype)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  uses_dropout = config.dropout > 0 or config.conv_dropout > 0
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=config.batch_size,
                                       dtype=dtype, mesh=mesh,
                                       seed=config.seed if uses_dropout else None),
                     donate_argnums=(0, 1),
                     **sharding.slice_shardings(mesh, state_sharding, train=True))
  eval_batch_size = sharding.eval_batch_size(config.eval_batch_size, mesh)
  eval_fn = jax.jit(functools.partial(_eval_slice, graphdef=graphdef,
                                      batch_size=eval_batch_size, dtype=dtype, mesh=mesh),
                    donate_argnums=(1,),
                    **sharding.slice_shardings(mesh, state_sharding.params, train=False))
  return train_fn, eval_fn, eval_batch_size



class Compiled(NamedTuple):
  """A run's compiled programs (see :func:`build_steps`)."""
  train: Callable
  eval_val: Callable
  eval_test: Callable
  eval_batch_size: int
  compile_seconds: float


def compile_steps(config: Config, built: tuple[Callable, Callable, int], state: TrainState,
             splits: tuple[Split, Split, Split], sizes: input_pipeline.SplitSizes
             ) -> Compiled:
  """Compiles ``built`` (see :func:`build_steps`) ahead, so epoch times exclude it."""
  train_fn, eval_fn, eval_batch_size = built
  train, val, test = splits
  start = time.perf_counter()
  order = input_pipeline.epoch_order(jax.random.key(0), 1, sizes.train, config.batch_size)
  train_fn = train_fn.lower(state, metrics.zeros(config.max_norm is not None), train, order,
                            jnp.int32(0), jnp.int32(1)).compile()
  eval_val, eval_test = (  # The two splits' arrays differ in shape: one program each.
      eval_fn.lower(state.params, metrics.zeros(with_telemetry=False), split,
                    input_pipeline.eval_order(n, eval_batch_size), jnp.int32(0)).compile()
      for split, n in ((val, sizes.val), (test, sizes.test)))
  return Compiled(train_fn, eval_val, eval_test, eval_batch_size, time.perf_counter() - start)
