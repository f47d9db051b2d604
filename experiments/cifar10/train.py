"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

The model is split once (``nnx.split``) into a static graph and a pure dict of
parameters; the train step is a pure function ``(state, batch) -> (state,
metrics)`` over that dict, so it can be jitted, donated and, later, sharded.
The data sets live on the device; each jitted call slices its batch out of the
epoch's on-device order, so no data crosses to the host during an epoch.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import tqdm
from flax import nnx

from experiments.cifar10 import checkpoints, input_pipeline, metrics, records
from experiments.cifar10.configs import Config
from experiments.cifar10.input_pipeline import Batch, Split
from experiments.cifar10.models import CNN, count_params
from experiments.cifar10.optimizer import keras_inverse_time_decay, make_optimizer

__all__ = ["TrainState", "create_train_state", "evaluate", "train_and_evaluate", "train_step"]

Params = dict[str, Any]


class TrainState(NamedTuple):
  """What changes during training: the parameters and the optimizer state."""
  params: Params
  opt_state: optax.OptState


def create_train_state(config: Config, key: jax.Array
                       ) -> tuple[nnx.GraphDef, TrainState, optax.GradientTransformation]:
  """Initialises the model and optimizer; returns ``(graphdef, state, tx)``."""
  model = CNN(conv_features=config.conv_features, dense_features=config.dense_features,
              dtype=jnp.dtype(config.dtype), rngs=nnx.Rngs(params=key))
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  tx = make_optimizer(config)
  return graphdef, TrainState(params, tx.init(params)), tx


def _logits(graphdef: nnx.GraphDef, params: Params, images: jax.Array) -> jax.Array:
  return nnx.merge(graphdef, params)(images)


def train_step(state: TrainState, batch: Batch, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation) -> tuple[TrainState, metrics.Totals]:
  """One optimizer update on ``batch``; returns the new state and the batch's
  loss/accuracy sums plus the constraint's telemetry.

  The loss is the example-weighted mean ``sum(w * l) / sum(w)``, so padding
  examples (weight 0) of the last, partial batch do not count.
  """
  def loss_fn(params):
    logits = _logits(graphdef, params, batch.images)
    sums = metrics.batch_sums(logits, batch.labels, batch.weights)
    return sums["loss"] / sums["count"], sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state), {**sums, **metrics.telemetry(opt_state)}


def _train_slice(state: TrainState, totals: metrics.Totals, data: Split, order: jax.Array,
                 index: jax.Array, *, step: Callable, batch_size: int, dtype: jnp.dtype
                 ) -> tuple[TrainState, metrics.Totals, jax.Array]:
  """Slices batch ``index`` of ``order`` out of ``data`` and trains on it."""
  batch = input_pipeline.batch_at(data, order, index, batch_size, dtype)
  state, step_metrics = step(state, batch)
  totals = metrics.accumulate(totals, step_metrics)
  return state, totals, step_metrics["loss"] / step_metrics["count"]


def _eval_slice(params: Params, totals: metrics.Totals, data: Split, order: jax.Array,
                index: jax.Array, *, graphdef: nnx.GraphDef, batch_size: int, dtype: jnp.dtype
                ) -> metrics.Totals:
  batch = input_pipeline.batch_at(data, order, index, batch_size, dtype)
  logits = _logits(graphdef, params, batch.images)
  return metrics.accumulate(totals, metrics.batch_sums(logits, batch.labels, batch.weights))


def _train_epoch(train_fn: Callable, state: TrainState, totals: metrics.Totals, data: Split,
                 order: jax.Array, num_steps: int, description: str
                 ) -> tuple[TrainState, metrics.Totals]:
  """Runs ``num_steps`` compiled train steps over ``order``, under a progress bar."""
  with tqdm.tqdm(total=num_steps, desc=description, unit="step", mininterval=1.0,
                 dynamic_ncols=True) as bar:
    for i in range(num_steps):
      state, totals, loss = train_fn(state, totals, data, order, jnp.int32(i))
      loss.block_until_ready()  # Keeps the bar and its ETA honest; no data moves.
      bar.update()
      if i % 10 == 0:
        bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
  return state, totals


def evaluate(eval_fn: Callable, params: Params, data: Split, batch_size: int
             ) -> dict[str, float | None]:
  """Loss and accuracy of ``params`` on every example of ``data``."""
  n = data.labels.shape[0]
  order = input_pipeline.eval_order(n, batch_size)
  totals = metrics.zeros(with_telemetry=False)
  for i in range(input_pipeline.num_batches(n, batch_size)):
    totals = eval_fn(params, totals, data, order, jnp.int32(i))
  return metrics.summarise(totals, prefix="")


def _device_description() -> dict[str, Any]:
  devices = jax.devices()
  return {
      "backend": jax.default_backend(),
      "device": devices[0].device_kind,
      "num_devices": len(devices),
      "cpu_count": os.cpu_count(),
      "jax_version": jax.__version__,
  }


_SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "img_per_s",
          "fraction_at_bound", "largest_norm")


def _describe(row: dict[str, Any], keys: tuple[str, ...] = _SHOWN) -> str:
  """``key value`` pairs of ``row`` for the console (None: a non-finite value)."""
  def fmt(v):
    return "nan" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
  shown = [k for k in keys if k in row and (row[k] is not None or k.endswith("loss"))]
  return ", ".join(f"{k} {fmt(row[k])}" for k in shown)


def _open_checkpoints(config: Config, workdir: pathlib.Path, resume: bool
                      ) -> tuple[checkpoints.Checkpoints, int | None]:
  """The workdir's checkpoints and the epoch to resume from (None: start afresh)."""
  ckpts = checkpoints.Checkpoints(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  latest = ckpts.latest_epoch()
  if latest is not None and not resume:
    raise checkpoints.CheckpointError(
        f"{workdir} already holds checkpoints (up to epoch {latest}). Pass --resume to "
        f"continue that run, or use a new --workdir. Nothing was changed.")
  if latest is not None and latest > config.epochs:
    raise checkpoints.CheckpointError(
        f"{workdir} holds a checkpoint of epoch {latest}, beyond --epochs {config.epochs}. "
        f"Pass --epochs {latest} or more, or use a new --workdir. Nothing was changed.")
  if latest is not None:
    ckpts.check_config(latest, config)
  return ckpts, latest


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *,
                       resume: bool = False) -> dict[str, Any]:
  """Trains on CIFAR-10 as ``config`` says, evaluating every epoch; returns the summary.

  Writes ``config.json``, ``metrics.jsonl`` (one row per epoch),
  ``summary.json`` and per-epoch Orbax checkpoints into ``workdir``.

  Args:
    config: the run's settings (see :mod:`experiments.cifar10.configs`).
    workdir: output directory (created if missing).
    resume: continue from the last checkpoint in ``workdir``. The result is
      bit-identical to an uninterrupted run on the same device.

  Raises:
    input_pipeline.DataUnavailableError: the data set cannot be found or built.
    checkpoints.CheckpointError: a checkpoint is in the way, corrupt, or from
      another config. Nothing on disk is deleted in that case.
  """
  start = time.perf_counter()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ckpts, resume_epoch = _open_checkpoints(config, workdir, resume)
  try:
    return _run(config, workdir, ckpts, resume_epoch, start)
  finally:
    ckpts.close()


def _run(config: Config, workdir: pathlib.Path, ckpts: checkpoints.Checkpoints,
         resume_epoch: int | None, start: float) -> dict[str, Any]:
  facts = _device_description()
  print(f"CIFAR-10 | backend: {facts['backend']} | devices: {facts['num_devices']} x "
        f"{facts['device']} (training on {jax.devices()[0]}) | compute dtype: {config.dtype}, "
        f"params float32", flush=True)

  splits = input_pipeline.load_splits(
      config.dataset, data_dir=config.data_dir, val_size=config.val_size,
      split_seed=config.split_seed, download=config.download)
  train = input_pipeline.to_device(splits.train, config.train_subset)
  val = input_pipeline.to_device(splits.val, config.eval_subset)
  test = input_pipeline.to_device(splits.test, config.eval_subset)
  num_train = train.labels.shape[0]

  init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
  graphdef, state, tx = create_train_state(config, init_key)
  num_params = count_params(state.params)
  if resume_epoch is not None:
    state = ckpts.restore(resume_epoch, state)
  records.truncate_metrics(workdir, resume_epoch or 0)  # Rows the coming epochs will redo.
  first_epoch = (resume_epoch or 0) + 1
  records.write_config(workdir, config)
  print(f"{num_params:,} parameters | train {num_train:,}, val {val.labels.shape[0]:,}, "
        f"test {test.labels.shape[0]:,} images"
        + (f" | resuming after epoch {resume_epoch}" if resume_epoch else ""), flush=True)

  dtype = jnp.dtype(config.dtype)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=config.batch_size,
                                       dtype=dtype), donate_argnums=(0, 1))
  eval_fn = jax.jit(functools.partial(_eval_slice, graphdef=graphdef,
                                      batch_size=config.eval_batch_size, dtype=dtype),
                    donate_argnums=(1,))
  with_telemetry = config.max_norm is not None
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  order = input_pipeline.epoch_order(shuffle_key, first_epoch, num_train, config.batch_size)

  compile_start = time.perf_counter()  # Compile ahead, so epoch times exclude it.
  train_fn = train_fn.lower(state, metrics.zeros(with_telemetry), train, order,
                            jnp.int32(0)).compile()
  compile_seconds = time.perf_counter() - compile_start

  schedule = keras_inverse_time_decay(config.learning_rate, config.lr_decay)
  last_rows = records.read_metrics(workdir)[-1:]
  val_metrics: dict[str, Any] = {"loss": None, "accuracy": None}
  if last_rows:
    val_metrics = {"loss": last_rows[0]["val_loss"], "accuracy": last_rows[0]["val_accuracy"]}
  for epoch in range(first_epoch, config.epochs + 1):
    epoch_start = time.perf_counter()
    order = input_pipeline.epoch_order(shuffle_key, epoch, num_train, config.batch_size)
    state, totals = _train_epoch(train_fn, state, metrics.zeros(with_telemetry), train, order,
                                 steps_per_epoch, f"epoch {epoch}/{config.epochs}")
    train_seconds = time.perf_counter() - epoch_start
    train_metrics = metrics.summarise(totals, prefix="train_")
    val_metrics = evaluate(eval_fn, state.params, val, config.eval_batch_size)
    row = {
        "epoch": epoch,
        "step": epoch * steps_per_epoch,
        "lr": float(schedule(epoch * steps_per_epoch - 1)),  # The rate of the epoch's last step.
        **{k: v for k, v in train_metrics.items() if k.startswith("train_")},
        "val_loss": val_metrics["loss"],
        "val_accuracy": val_metrics["accuracy"],
        "seconds": time.perf_counter() - epoch_start,
        "train_seconds": train_seconds,
        "img_per_s": num_train / train_seconds,
        "fraction_at_bound": train_metrics.get("fraction_at_bound"),
        "largest_norm": train_metrics.get("largest_norm"),
        "neuron_norms": metrics.neuron_norm_stats(state.params),
    }
    records.append_metrics(workdir, row)
    ckpts.save(epoch, state, config)
    tqdm.tqdm.write(f"epoch {epoch}: " + _describe(row))

  test_metrics = evaluate(eval_fn, state.params, test, config.eval_batch_size)
  summary = {
      "test_accuracy": test_metrics["accuracy"],
      "test_loss": test_metrics["loss"],
      "val_accuracy": val_metrics["accuracy"],
      "val_loss": val_metrics["loss"],
      "num_params": num_params,
      **facts,
      "dtype": config.dtype,
      "epochs": config.epochs,
      "steps": config.epochs * steps_per_epoch,
      "resumed_from_epoch": resume_epoch,
      "compile_seconds": compile_seconds,
      "total_seconds": time.perf_counter() - start,
  }
  records.write_summary(workdir, summary)
  print(f"test: {_describe(summary, ('test_loss', 'test_accuracy'))} | results in {workdir}",
        flush=True)
  return summary
