"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

The model is split once (``nnx.split``) into a static graph and a pure dict of
parameters; the train step is a pure function ``(state, batch) -> (state,
metrics)`` over that dict, so it can be jitted, donated and sharded.
The data sets live on the devices; each jitted call slices its batch out of the
epoch's on-device order, so no data crosses to the host during an epoch, and
the loop reads a small report back only every few steps, one step behind the
device (:func:`train_epoch`), so dispatch never waits for the host.
The same step runs data-parallel over every device of every host: the
shardings of its inputs come from :mod:`.sharding`, and XLA does the rest.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import tqdm
from flax import nnx

from experiments import allocator
from experiments.cifar10 import (
    checkpoints,
    distributed,
    input_pipeline,
    metrics,
    records,
    sharding,
)
from experiments.cifar10.configs import Config
from experiments.cifar10.input_pipeline import Batch, Split
from experiments.cifar10.models import CNN, count_params
from experiments.cifar10.optimizer import learning_rate_at, make_optimizer

__all__ = [
    "EpochOutcome", "Report", "TrainState", "WorkdirError", "build_steps", "create_train_state",
    "evaluate", "read_host", "train_and_evaluate", "train_epoch", "train_step",
]

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


class Report(NamedTuple):
  """What the host reads of one train step, packed so that one read gets all of it.

  ``batch`` holds the batch's mean ``loss``, ``accuracy`` and the constraint's
  telemetry; ``epoch_loss`` is the running mean loss of the epoch so far,
  which stays non-finite once any step of the epoch was.
  """
  batch: metrics.Totals
  epoch_loss: jax.Array


def _train_slice(state: TrainState, totals: metrics.Totals, data: Split, order: jax.Array,
                 index: jax.Array, *, step: Callable, batch_size: int, dtype: jnp.dtype,
                 mesh: jax.sharding.Mesh) -> tuple[TrainState, metrics.Totals, Report]:
  """Slices batch ``index`` of ``order`` out of ``data`` and trains on it; returns the
  new state and totals, and the step's :class:`Report`."""
  batch = input_pipeline.batch_at(data, order, index, batch_size, dtype, mesh=mesh)
  state, step_metrics = step(state, batch)
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

  ``train_fn(state, totals, data, order, index) -> (state, totals, Report)``
  trains on batch ``index`` of ``order`` (state and totals donated);
  ``eval_fn(params, totals, data, order, index) -> totals`` evaluates one.
  """
  dtype = jnp.dtype(config.dtype)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=config.batch_size,
                                       dtype=dtype, mesh=mesh), donate_argnums=(0, 1),
                     **sharding.slice_shardings(mesh, state_sharding, train=True))
  eval_batch_size = sharding.eval_batch_size(config.eval_batch_size, mesh)
  eval_fn = jax.jit(functools.partial(_eval_slice, graphdef=graphdef,
                                      batch_size=eval_batch_size, dtype=dtype, mesh=mesh),
                    donate_argnums=(1,),
                    **sharding.slice_shardings(mesh, state_sharding.params, train=False))
  return train_fn, eval_fn, eval_batch_size


# The host reads a step's report every `READ_EVERY` steps, or sooner once
# `READ_INTERVAL_S` seconds have passed, and always one step behind the newest
# dispatched step, so the device never waits for the host. A non-finite loss
# therefore stops training within READ_EVERY + 1 steps.
READ_EVERY = 10
READ_INTERVAL_S = 1.0


def read_host(tree: Any) -> Any:
  """Every device-to-host read of the training loop goes through here (one call,
  one read of a small pytree), so that tests can count them."""
  return jax.device_get(tree)


class _Dispatched(NamedTuple):
  step: int  # The global optimizer step (1-based).
  report: Report
  norms: Any  # Per-layer neuron-norm stats on the device, for a logged step; else None.


class EpochOutcome(NamedTuple):
  """How an epoch's training ended.

  Attributes:
    steps_run: optimizer steps taken this epoch.
    diverged_at: the global step of the first non-finite batch loss, or None.
  """
  steps_run: int
  diverged_at: int | None


def train_epoch(train_fn: Callable, state: TrainState, totals: metrics.Totals, data: Split,
                order: jax.Array, *, first_step: int, num_steps: int, description: str,
                log_every: int = 0,
                write_row: Callable[[int, dict[str, Any], Any], None] | None = None,
                disable_bar: bool = False
                ) -> tuple[TrainState, metrics.Totals, EpochOutcome]:
  """Runs ``num_steps`` compiled train steps over ``order``, under a progress bar.

  The loop never waits for the step it has just dispatched: it reads the
  report of the step before it, every :data:`READ_EVERY` steps (or every
  :data:`READ_INTERVAL_S` seconds), so there are O(1) device-to-host reads per
  interval and the bar's count and ETA lag the device by at most that much.
  Every ``log_every`` steps (and at step 1), the step's report and its neuron
  norms are passed to ``write_row(step, report, norms)`` once they are read.
  Training stops within an interval of the first batch whose loss is NaN or
  infinite; that step's row is written too (its norms are None unless it was
  a logged step).
  """
  recent: collections.deque[_Dispatched] = collections.deque(maxlen=READ_EVERY + 2)
  logged: list[_Dispatched] = []
  known_finite = first_step - 1  # Every step up to this one had a finite loss.
  last_read = time.monotonic()

  def flush(upto: int) -> None:
    due = [d for d in logged if d.step <= upto]
    if due and write_row is not None:
      for d, (report, norms) in zip(due, read_host([(d.report.batch, d.norms) for d in due])):
        write_row(d.step, report, norms)
    logged[:] = [d for d in logged if d.step > upto]

  with tqdm.tqdm(total=num_steps, desc=description, unit="step", mininterval=1.0,
                 dynamic_ncols=True, disable=disable_bar or not distributed.is_primary()) as bar:
    for i in range(num_steps):
      step = first_step + i
      state, totals, report = train_fn(state, totals, data, order, jnp.int32(i))
      is_logged = log_every > 0 and (step % log_every == 0 or step == 1)
      norms = metrics.norm_stats(state.params) if is_logged else None  # Dispatched, not read.
      recent.append(_Dispatched(step, report, norms))
      if is_logged:
        logged.append(recent[-1])
      last = i == num_steps - 1
      due = (i + 1) % READ_EVERY == 0 or time.monotonic() - last_read >= READ_INTERVAL_S
      if not (last or (due and len(recent) >= 2)):
        continue
      target = recent[-1] if last else recent[-2]  # One step behind, except at the end.
      epoch_loss = float(read_host(target.report.epoch_loss))
      last_read = time.monotonic()
      bar.update(target.step - first_step + 1 - bar.n)
      if not math.isfinite(epoch_loss):
        suspects = [d for d in recent if known_finite < d.step <= target.step]
        losses = read_host([d.report.batch["loss"] for d in suspects])
        bad = next((d for d, x in zip(suspects, losses) if not math.isfinite(float(x))),
                   suspects[-1])
        if all(d.step != bad.step for d in logged):
          logged.append(_Dispatched(bad.step, bad.report, None))
        logged[:] = sorted((d for d in logged if d.step <= bad.step), key=lambda d: d.step)
        flush(bad.step)
        return state, totals, EpochOutcome(i + 1, bad.step)
      known_finite = target.step
      flush(target.step)
      bar.set_postfix(loss=f"{epoch_loss:.4f}", refresh=False)
  return state, totals, EpochOutcome(num_steps, None)


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
      "malloc": allocator.active_allocator(),
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


class WorkdirError(RuntimeError):
  """The workdir cannot be used (it is a file, or cannot be written); nothing was written."""


def _check_workdir(workdir: pathlib.Path) -> None:
  """Fails early, before any data is read, if ``workdir`` is no directory or cannot be
  created or written. Leaves nothing behind (a probe is made and removed)."""
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir} exists and is not a directory. Nothing was "
                       f"written.")
  missing = [p for p in (workdir, *workdir.parents) if not p.exists()]
  try:
    if missing:  # Can its top-most missing directory be made?
      missing[-1].mkdir()
      missing[-1].rmdir()
    else:
      fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write_test")
      os.close(fd)
      os.unlink(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir} cannot be written: {e.strerror or e}. Nothing "
                       f"was written.") from e


def _make_workdir(workdir: pathlib.Path) -> None:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir} cannot be created: {e.strerror or e}.") from e


def _open_checkpoints(config: Config, workdir: pathlib.Path, resume: bool
                      ) -> tuple[checkpoints.Checkpoints | None, int | None]:
  """The workdir's checkpoints, if it has any, and the epoch to resume from
  (None: start afresh). Creates nothing."""
  directory = workdir / "checkpoints"
  if not directory.is_dir():
    return None, None
  ckpts = checkpoints.Checkpoints(directory, max_to_keep=config.keep_checkpoints, create=False)
  try:
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
  except BaseException:
    ckpts.close()
    raise
  return ckpts, latest


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *, resume: bool = False,
                       data: tuple[input_pipeline.Splits, input_pipeline.SplitSizes] | None
                       = None) -> dict[str, Any]:
  """Trains on CIFAR-10 as ``config`` says, evaluating every epoch; returns the summary.

  Writes ``config.json``, ``metrics.jsonl`` (one row per epoch),
  ``summary.json`` and per-epoch Orbax checkpoints into ``workdir``. Nothing
  is created there before the data set has loaded.

  Args:
    config: the run's settings (see :mod:`experiments.cifar10.configs`).
    workdir: output directory (created if missing).
    resume: continue from the last checkpoint in ``workdir`` (a workdir with
      none starts from scratch, and says so). The result is bit-identical to
      an uninterrupted run on the same device.
    data: the splits already on the devices, and their sizes, instead of
      loading ``config.dataset`` (benchmarks use synthetic data this way). The
      subset fields of ``config`` do not apply to them.

  Raises:
    input_pipeline.DataUnavailableError: the data set cannot be found or built.
    checkpoints.CheckpointError: a checkpoint is in the way, corrupt, or from
      another config. Nothing on disk is deleted in that case.
    WorkdirError: ``workdir`` is not a writable directory.
    sharding.ParallelConfigError: the run does not fit the devices.
  """
  start = time.perf_counter()
  mesh = sharding.make_mesh(config.num_devices)  # Every device of every process by default.
  sharding.check_config(config, mesh)
  workdir = pathlib.Path(workdir)
  _check_workdir(workdir)
  ckpts, resume_epoch = _open_checkpoints(config, workdir, resume)
  try:
    with distributed.console_of_primary_only():  # Files are written by process 0 only, too.
      return _run(config, workdir, ckpts, resume, resume_epoch, start, mesh, data)
  finally:
    if ckpts is not None:
      ckpts.close()


def _run(config: Config, workdir: pathlib.Path, ckpts: checkpoints.Checkpoints | None,
         resume: bool, resume_epoch: int | None, start: float, mesh: jax.sharding.Mesh,
         data: tuple[input_pipeline.Splits, input_pipeline.SplitSizes] | None
         ) -> dict[str, Any]:
  facts = {**_device_description(), "mesh_devices": mesh.size}
  print(f"CIFAR-10 | backend: {facts['backend']} | devices: {facts['num_devices']} x "
        f"{facts['device']} (training on {sharding.describe(mesh, config.shard_dense1)}) | "
        f"compute dtype: {config.dtype}, params float32", flush=True)
  if resume and resume_epoch is None:
    print(f"--resume: {workdir} holds no checkpoint yet, so training starts from scratch.",
          flush=True)

  # Split by example over the devices; each process decodes only its own share.
  load_start = time.perf_counter()
  (train, val, test), sizes = data or input_pipeline.load_splits(config, mesh)
  facts["data_seconds"] = time.perf_counter() - load_start  # Decode or cache, to the device.
  _make_workdir(workdir)  # Only now that the data is there.
  if ckpts is not None:
    return _train(config, workdir, ckpts, resume_epoch, start, mesh, facts, sizes,
                  (train, val, test))
  ckpts = checkpoints.Checkpoints(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
  try:
    return _train(config, workdir, ckpts, resume_epoch, start, mesh, facts, sizes,
                  (train, val, test))
  finally:
    ckpts.close()


def _train(config: Config, workdir: pathlib.Path, ckpts: checkpoints.Checkpoints,
           resume_epoch: int | None, start: float, mesh: jax.sharding.Mesh,
           facts: dict[str, Any], sizes: input_pipeline.SplitSizes,
           splits: tuple[Split, Split, Split]) -> dict[str, Any]:
  train, val, test = splits
  num_train = sizes.train
  init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
  graphdef, state, tx = create_train_state(config, init_key)
  num_params = count_params(state.params)
  state_sharding = sharding.state_shardings(state, mesh, config.shard_dense1)
  state = jax.device_put(state, state_sharding)  # Orbax restores into these shardings.
  if resume_epoch is not None:
    state = ckpts.restore(resume_epoch, state)
  records.truncate_metrics(workdir, resume_epoch or 0)  # Rows the coming epochs will redo.
  first_epoch = (resume_epoch or 0) + 1
  records.write_config(workdir, config)
  print(f"{num_params:,} parameters | train {num_train:,}, val {sizes.val:,}, "
        f"test {sizes.test:,} images | data on the device in {facts['data_seconds']:.1f} s"
        + (f" | resuming after epoch {resume_epoch}" if resume_epoch else ""), flush=True)

  train_fn, eval_fn, eval_batch_size = build_steps(config, graphdef, tx, mesh, state_sharding)
  with_telemetry = config.max_norm is not None
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)
  order = input_pipeline.epoch_order(shuffle_key, first_epoch, num_train, config.batch_size)

  compile_start = time.perf_counter()  # Compile ahead, so epoch times exclude it.
  train_fn = train_fn.lower(state, metrics.zeros(with_telemetry), train, order,
                            jnp.int32(0)).compile()
  eval_val, eval_test = (  # The two splits' arrays differ in shape: one program each.
      eval_fn.lower(state.params, metrics.zeros(with_telemetry=False), split,
                    input_pipeline.eval_order(n, eval_batch_size), jnp.int32(0)).compile()
      for split, n in ((val, sizes.val), (test, sizes.test)))
  compile_seconds = time.perf_counter() - compile_start

  def lr_at(step_number: int) -> float:
    return learning_rate_at(config.learning_rate, config.lr_decay, step_number - 1)

  records.truncate_steps(workdir, (first_epoch - 1) * steps_per_epoch)

  def write_row(epoch: int, step_number: int, report: dict[str, Any], norms: Any) -> None:
    """Appends a logged step to steps.jsonl (``norms`` None: not measured at that step)."""
    records.append_step(workdir, {
        "step": step_number, "epoch": epoch, "lr": lr_at(step_number),
        **{k: metrics.finite_or_none(v) for k, v in report.items()},
        "neuron_norms": None if norms is None else metrics.norm_stats_to_json(norms)})

  diverged_at: int | None = None
  steps_run = (first_epoch - 1) * steps_per_epoch
  last_rows = records.read_metrics(workdir)[-1:]
  val_metrics: dict[str, Any] = {"loss": None, "accuracy": None}
  if last_rows:
    val_metrics = {"loss": last_rows[0]["val_loss"], "accuracy": last_rows[0]["val_accuracy"]}
  for epoch in range(first_epoch, config.epochs + 1):
    epoch_start = time.perf_counter()
    order = input_pipeline.epoch_order(shuffle_key, epoch, num_train, config.batch_size)
    state, totals, outcome = train_epoch(
        train_fn, state, metrics.zeros(with_telemetry), train, order,
        first_step=(epoch - 1) * steps_per_epoch + 1, num_steps=steps_per_epoch,
        description=f"epoch {epoch}/{config.epochs}", log_every=config.log_every,
        write_row=functools.partial(write_row, epoch))
    steps_run += outcome.steps_run
    train_seconds = time.perf_counter() - epoch_start
    train_metrics = metrics.summarise(totals, prefix="train_")
    val_metrics = evaluate(eval_val, state.params, val, eval_batch_size, sizes.val)
    row = {
        "epoch": epoch,
        "step": epoch * steps_per_epoch,
        "lr": lr_at(epoch * steps_per_epoch),  # The rate of the epoch's last step.
        **{k: v for k, v in train_metrics.items() if k.startswith("train_")},
        "val_loss": val_metrics["loss"],
        "val_accuracy": val_metrics["accuracy"],
        "seconds": time.perf_counter() - epoch_start,
        "train_seconds": train_seconds,
        "img_per_s": min(num_train, outcome.steps_run * config.batch_size) / train_seconds,
        "fraction_at_bound": train_metrics.get("fraction_at_bound"),
        "largest_norm": train_metrics.get("largest_norm"),
        "neuron_norms": metrics.neuron_norm_stats(state.params),
    }
    if outcome.diverged_at is not None:  # No checkpoint of a NaN state, no more epochs.
      diverged_at = outcome.diverged_at
      row["diverged_at_step"] = diverged_at
      records.append_metrics(workdir, row)
      tqdm.tqdm.write(f"epoch {epoch}: stopped, the loss is not finite at step {diverged_at}. "
                      + _describe(row))
      break
    records.append_metrics(workdir, row)
    ckpts.save(epoch, state, config)
    tqdm.tqdm.write(f"epoch {epoch}: " + _describe(row))

  test_metrics = evaluate(eval_test, state.params, test, eval_batch_size, sizes.test)
  summary = {
      "test_accuracy": test_metrics["accuracy"],
      "test_loss": test_metrics["loss"],
      "val_accuracy": val_metrics["accuracy"],
      "val_loss": val_metrics["loss"],
      "num_params": num_params,
      **facts,
      "dtype": config.dtype,
      "epochs": config.epochs,
      "steps": steps_run,
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
