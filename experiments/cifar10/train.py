"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

The model is split once (``nnx.split``) into a static graph and a pure dict of
parameters; the train step is a pure function ``(state, batch) -> (state,
metrics)`` over that dict, so it can be jitted, donated and sharded.
The data sets live on the devices; each jitted call slices its batch out of the
epoch's on-device order, so no data crosses to the host during an epoch.
The same step runs data-parallel over every device of every host: the
shardings of its inputs come from :mod:`.parallel`, and XLA does the rest.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import tqdm
from flax import nnx

from experiments.cifar10 import checkpoints, input_pipeline, metrics, parallel, records
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
              conv_impl=config.conv_impl,
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
                 index: jax.Array, *, step: Callable, batch_size: int, dtype: jnp.dtype,
                 mesh: jax.sharding.Mesh
                 ) -> tuple[TrainState, metrics.Totals, metrics.Totals]:
  """Slices batch ``index`` of ``order`` out of ``data`` and trains on it; returns the
  new state and totals, and the batch's mean ``loss``, ``accuracy`` and telemetry."""
  batch = parallel.batch_at(data, order, index, batch_size, dtype, mesh=mesh)
  state, step_metrics = step(state, batch)
  totals = metrics.accumulate(totals, step_metrics)
  count = step_metrics["count"]
  return state, totals, {"loss": step_metrics["loss"] / count,
                         "accuracy": step_metrics["correct"] / count,
                         **{k: v for k, v in step_metrics.items() if k in metrics.TELEMETRY}}


def _eval_slice(params: Params, totals: metrics.Totals, data: Split, order: jax.Array,
                index: jax.Array, *, graphdef: nnx.GraphDef, batch_size: int, dtype: jnp.dtype,
                mesh: jax.sharding.Mesh) -> metrics.Totals:
  batch = parallel.batch_at(data, order, index, batch_size, dtype, mesh=mesh)
  logits = _logits(graphdef, params, batch.images)
  return metrics.accumulate(totals, metrics.batch_sums(logits, batch.labels, batch.weights))


def _train_epoch(train_fn: Callable, state: TrainState, totals: metrics.Totals, data: Split,
                 order: jax.Array, num_steps: int, description: str,
                 on_step: Callable[[int, TrainState, metrics.Totals], None] | None = None
                 ) -> tuple[TrainState, metrics.Totals, int | None]:
  """Runs ``num_steps`` compiled train steps over ``order``, under a progress bar.

  ``on_step(i, state, batch_metrics)`` is called after step ``i`` (0-based).
  Training stops at the first batch whose loss is NaN or infinite; the third
  result is then the number of steps run (else None).
  """
  with tqdm.tqdm(total=num_steps, desc=description, unit="step", mininterval=1.0,
                 dynamic_ncols=True, disable=not parallel.is_primary()) as bar:
    for i in range(num_steps):
      state, totals, batch_metrics = train_fn(state, totals, data, order, jnp.int32(i))
      # Reading the loss keeps the bar and its ETA honest; only this scalar moves.
      loss = float(batch_metrics["loss"])
      bar.update()
      if on_step is not None:
        on_step(i, state, batch_metrics)
      if not math.isfinite(loss):
        return state, totals, i + 1
      if i % 10 == 0:
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
  return state, totals, None


def evaluate(eval_fn: Callable, params: Params, data: Split, batch_size: int,
             num_examples: int | None = None) -> dict[str, float | None]:
  """Loss and accuracy of ``params`` on every example of ``data`` (on its first
  ``num_examples``, when its arrays are padded to whole shards)."""
  n = data.labels.shape[0] if num_examples is None else num_examples
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
      "num_processes": jax.process_count(),
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
  mesh = parallel.make_mesh(config.num_devices)  # Every device of every process by default.
  parallel.check_config(config, mesh)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  ckpts, resume_epoch = _open_checkpoints(config, workdir, resume)
  try:
    with parallel.console_of_primary_only():  # Files are written by process 0 only, too.
      return _run(config, workdir, ckpts, resume_epoch, start, mesh)
  finally:
    ckpts.close()


def _run(config: Config, workdir: pathlib.Path, ckpts: checkpoints.Checkpoints,
         resume_epoch: int | None, start: float, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  facts = {**_device_description(), "mesh_devices": mesh.size}
  print(f"CIFAR-10 | backend: {facts['backend']} | devices: {facts['num_devices']} x "
        f"{facts['device']} (training on {parallel.describe(mesh, config.shard_dense1)}) | "
        f"compute dtype: {config.dtype}, params float32", flush=True)

  # Split by example over the devices; each process decodes only its own share.
  (train, val, test), sizes = parallel.load_splits(config, mesh)
  num_train = sizes.train

  init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
  graphdef, state, tx = create_train_state(config, init_key)
  num_params = count_params(state.params)
  state_sharding = parallel.state_shardings(state, mesh, config.shard_dense1)
  state = jax.device_put(state, state_sharding)  # Orbax restores into these shardings.
  if resume_epoch is not None:
    state = ckpts.restore(resume_epoch, state)
  records.truncate_metrics(workdir, resume_epoch or 0)  # Rows the coming epochs will redo.
  first_epoch = (resume_epoch or 0) + 1
  records.write_config(workdir, config)
  print(f"{num_params:,} parameters | train {num_train:,}, val {sizes.val:,}, "
        f"test {sizes.test:,} images"
        + (f" | resuming after epoch {resume_epoch}" if resume_epoch else ""), flush=True)

  dtype = jnp.dtype(config.dtype)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=config.batch_size,
                                       dtype=dtype, mesh=mesh), donate_argnums=(0, 1),
                     **parallel.slice_shardings(mesh, state_sharding, train=True))
  eval_batch_size = parallel.eval_batch_size(config.eval_batch_size, mesh)
  eval_fn = jax.jit(functools.partial(_eval_slice, graphdef=graphdef,
                                      batch_size=eval_batch_size, dtype=dtype, mesh=mesh),
                    donate_argnums=(1,),
                    **parallel.slice_shardings(mesh, state_sharding.params, train=False))
  with_telemetry = config.max_norm is not None
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  order = input_pipeline.epoch_order(shuffle_key, first_epoch, num_train, config.batch_size)

  compile_start = time.perf_counter()  # Compile ahead, so epoch times exclude it.
  train_fn = train_fn.lower(state, metrics.zeros(with_telemetry), train, order,
                            jnp.int32(0)).compile()
  compile_seconds = time.perf_counter() - compile_start

  schedule = keras_inverse_time_decay(config.learning_rate, config.lr_decay)
  records.truncate_steps(workdir, (first_epoch - 1) * steps_per_epoch)

  def log_step(epoch: int, i: int, state: TrainState, batch_metrics: metrics.Totals) -> None:
    """Appends step ``i`` of ``epoch`` to steps.jsonl: every ``log_every`` steps, at
    step 1, and at a non-finite loss."""
    step_number = (epoch - 1) * steps_per_epoch + i + 1
    values = {k: metrics.finite_or_none(v) for k, v in jax.device_get(batch_metrics).items()}
    if not (step_number % config.log_every == 0 or step_number == 1 or values["loss"] is None):
      return
    records.append_step(workdir, {
        "step": step_number, "epoch": epoch, "lr": float(schedule(step_number - 1)), **values,
        "neuron_norms": metrics.neuron_norm_stats(state.params)})

  diverged_at: int | None = None
  last_rows = records.read_metrics(workdir)[-1:]
  val_metrics: dict[str, Any] = {"loss": None, "accuracy": None}
  if last_rows:
    val_metrics = {"loss": last_rows[0]["val_loss"], "accuracy": last_rows[0]["val_accuracy"]}
  for epoch in range(first_epoch, config.epochs + 1):
    epoch_start = time.perf_counter()
    order = input_pipeline.epoch_order(shuffle_key, epoch, num_train, config.batch_size)
    on_step = functools.partial(log_step, epoch) if config.log_every else None
    state, totals, stopped_after = _train_epoch(
        train_fn, state, metrics.zeros(with_telemetry), train, order, steps_per_epoch,
        f"epoch {epoch}/{config.epochs}", on_step)
    train_seconds = time.perf_counter() - epoch_start
    train_metrics = metrics.summarise(totals, prefix="train_")
    val_metrics = evaluate(eval_fn, state.params, val, eval_batch_size, sizes.val)
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
    if stopped_after is not None:  # Diverged: no checkpoint of a NaN state, no more epochs.
      diverged_at = (epoch - 1) * steps_per_epoch + stopped_after
      row["diverged_at_step"] = diverged_at
      records.append_metrics(workdir, row)
      tqdm.tqdm.write(f"epoch {epoch}: stopped, the loss is not finite at step {diverged_at}. "
                      + _describe(row))
      break
    records.append_metrics(workdir, row)
    ckpts.save(epoch, state, config)
    tqdm.tqdm.write(f"epoch {epoch}: " + _describe(row))

  test_metrics = evaluate(eval_fn, state.params, test, eval_batch_size, sizes.test)
  summary = {
      "test_accuracy": test_metrics["accuracy"],
      "test_loss": test_metrics["loss"],
      "val_accuracy": val_metrics["accuracy"],
      "val_loss": val_metrics["loss"],
      "num_params": num_params,
      **facts,
      "dtype": config.dtype,
      "epochs": config.epochs,
      "steps": config.epochs * steps_per_epoch if diverged_at is None else diverged_at,
      "diverged": diverged_at is not None,
      "diverged_at_step": diverged_at,
      "resumed_from_epoch": resume_epoch,
      "compile_seconds": compile_seconds,
      "total_seconds": time.perf_counter() - start,
  }
  records.write_summary(workdir, summary)
  print(f"test: {_describe(summary, ('test_loss', 'test_accuracy'))} | results in {workdir}",
        flush=True)
  return summary
