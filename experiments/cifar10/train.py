"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

The jitted programs, a pure train step over the model's parameters and the
train and eval slices around it, are :mod:`.steps`'. The data sets live on the
devices; each jitted call slices its batch out of the epoch's on-device order,
so no data crosses to the host during an epoch, and the loop
(:mod:`.epoch_loop`) reads a small report back only every few steps, one step
behind the device, so dispatch never waits for the host. What a run may do
with its workdir is :mod:`.workdir`'s to say.
The same step runs data-parallel over every device of every host: the
shardings of its inputs come from :mod:`.sharding`, and XLA does the rest.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import tqdm

from experiments import allocator
from experiments.cifar10 import (
  checkpoints,
  distributed,
  epoch_loop,
  input_pipeline,
  metrics,
  records,
  sharding,
)
from experiments.cifar10 import workdir as workdir_policy
from experiments.cifar10.configs import Config
from experiments.cifar10.epoch_loop import EpochOutcome, Report, evaluate, read_host, train_epoch
from experiments.cifar10.input_pipeline import Split
from experiments.cifar10.models import count_params
from experiments.cifar10.optimizer import learning_rate_at
from experiments.cifar10.steps import (
  Compiled,
  TrainState,
  build_steps,
  compile_steps,
  create_train_state,
  train_step,
)
from experiments.cifar10.workdir import WorkdirError

__all__ = [  # The steps' and the loop's names stay importable from here, where a run's parts are.
    "EpochOutcome", "Report", "TrainState", "WorkdirError", "build_steps", "create_train_state",
    "evaluate", "read_host", "train_and_evaluate", "train_epoch", "train_step",
]


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


def train_and_evaluate(config: Config, workdir: str | os.PathLike, *, resume: bool = False,
                       overwrite: bool = False,
                       data: tuple[input_pipeline.Splits, input_pipeline.SplitSizes] | None
                       = None) -> dict[str, Any]:
  """Trains on CIFAR-10 as ``config`` says, evaluating every epoch; returns the summary.

  Writes ``config.json``, ``metrics.jsonl`` (one row per epoch),
  ``summary.json`` and per-epoch Orbax checkpoints into ``workdir`` (see
  :mod:`.workdir` for what a run may do there). Nothing but its lock file is
  written there before the data set has loaded.

  Args:
    config: the run's settings (see :mod:`experiments.cifar10.configs`).
    workdir: output directory (created if missing).
    resume: continue from the last checkpoint in ``workdir`` (a workdir with
      none starts from scratch, and says so). The result is bit-identical to
      an uninterrupted run on the same device.
    overwrite: replace the run that ``workdir`` holds (it is deleted once
      this one has finished).
    data: the splits already on the devices, and their sizes, instead of
      loading ``config.dataset`` (benchmarks use synthetic data this way). The
      subset fields of ``config`` do not apply to them.

  Raises:
    input_pipeline.DataUnavailableError: the data set cannot be found or built.
    checkpoints.CheckpointError: a checkpoint is in the way, corrupt, or from
      another config. Nothing on disk is deleted in that case.
    WorkdirError: ``workdir`` is not a writable directory, is in use, or holds
      a run that this one would overwrite.
    sharding.ParallelConfigError: the run does not fit the devices.
  """
  start = time.perf_counter()
  mesh = sharding.make_mesh(config.num_devices)  # Every device of every process by default.
  sharding.check_config(config, mesh)
  workdir = pathlib.Path(workdir)
  workdir_policy.check_workdir(workdir)
  try:
    return _run(config, workdir, resume=resume, overwrite=overwrite, data=data, start=start,
                mesh=mesh)
  except records.RecordsError as e:  # A record could not be written (a full disk, say).
    raise WorkdirError(f"{e}. The records of the epochs before are kept; continue with "
                       f"--resume once it can be written.") from e


def _run(config: Config, workdir: pathlib.Path, *, resume: bool, overwrite: bool,
         data: tuple[input_pipeline.Splits, input_pipeline.SplitSizes] | None, start: float,
         mesh: jax.sharding.Mesh) -> dict[str, Any]:
  with contextlib.ExitStack() as stack:
    stack.enter_context(workdir_policy.exclusive(workdir))
    ckpts, resume_epoch = workdir_policy.open_checkpoints(config, workdir, resume=resume,
                                                          overwrite=overwrite)
    if ckpts is not None:
      stack.callback(ckpts.close)
    stack.enter_context(distributed.console_of_primary_only())  # Files: process 0 only, too.
    facts = {**_device_description(), "mesh_devices": mesh.size}
    print(f"CIFAR-10 | backend: {facts['backend']} | devices: {facts['num_devices']} x "
          f"{facts['device']} (training on {sharding.describe(mesh, config.shard_dense1)}) | "
          f"compute dtype: {config.dtype}, params float32", flush=True)
    if resume and resume_epoch is None:
      print(f"--resume: {workdir} holds no checkpoint yet, so training starts from scratch.",
            flush=True)

    # Split by example over the devices; each process decodes only its own share.
    load_start = time.perf_counter()
    splits, sizes = data or input_pipeline.load_splits(config, mesh)
    facts["data_seconds"] = time.perf_counter() - load_start  # Decode or cache, to the device.

    init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
    graphdef, state, tx = create_train_state(config, init_key)
    num_params = count_params(state.params)
    state_sharding = sharding.state_shardings(state, mesh, config.shard_dense1)
    state = jax.device_put(state, state_sharding)  # Orbax restores into these shardings.
    if resume_epoch is not None:
      state = ckpts.restore(resume_epoch, state)
    steps_per_epoch = input_pipeline.num_batches(sizes.train, config.batch_size)
    earlier_seconds = workdir_policy.start_records(  # Only now that the data is there.
        workdir, config, resume_epoch=resume_epoch, steps_per_epoch=steps_per_epoch,
        overwrite=overwrite)
    if ckpts is None:
      ckpts = checkpoints.Checkpoints(workdir / "checkpoints",
                                      max_to_keep=config.keep_checkpoints)
      stack.callback(ckpts.close)
    print(f"{num_params:,} parameters | train {sizes.train:,}, val {sizes.val:,}, "
          f"test {sizes.test:,} images | data on the device in {facts['data_seconds']:.1f} s"
          + (f" | resuming after epoch {resume_epoch}" if resume_epoch else ""), flush=True)

    steps = compile_steps(config, build_steps(config, graphdef, tx, mesh, state_sharding), state,
                          splits, sizes)
    state, outcome = _train_epochs(
        config, workdir, steps, state, splits, sizes=sizes, ckpts=ckpts,
        shuffle_key=shuffle_key, first_epoch=(resume_epoch or 0) + 1,
        seconds_so_far=lambda: earlier_seconds + time.perf_counter() - start)
    test_metrics = evaluate(steps.eval_test, state.params, splits[2], steps.eval_batch_size,
                            sizes.test)
    summary = {
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "val_accuracy": outcome.val_metrics["accuracy"],
        "val_loss": outcome.val_metrics["loss"],
        "num_params": num_params,
        **facts,
        "dtype": config.dtype,
        "epochs": config.epochs,
        "steps": outcome.steps_run,
        "diverged": outcome.diverged_at is not None,
        "diverged_at_step": outcome.diverged_at,
        "resumed_from_epoch": resume_epoch,
        "compile_seconds": steps.compile_seconds,
        "total_seconds": earlier_seconds + time.perf_counter() - start,
    }
    workdir_policy.finish(workdir, summary)
    print(f"test: {_describe(summary, ('test_loss', 'test_accuracy'))} | results in {workdir}",
          flush=True)
    return summary


class _Trained(NamedTuple):
  """How the epochs of a run ended."""
  val_metrics: dict[str, Any]  # Of the last epoch trained (or kept from before a resume).
  steps_run: int
  diverged_at: int | None


def _train_epochs(config: Config, workdir: pathlib.Path, steps: Compiled, state: TrainState,
                  splits: tuple[Split, Split, Split], *, sizes: input_pipeline.SplitSizes,
                  ckpts: checkpoints.Checkpoints, shuffle_key: jax.Array, first_epoch: int,
                  seconds_so_far: Callable[[], float]) -> tuple[TrainState, _Trained]:
  """Trains epochs ``first_epoch..config.epochs``: each one's row, then its checkpoint and
  the run's compute time so far (``seconds_so_far()``)."""
  train, val, _ = splits
  num_train = sizes.train
  with_telemetry = config.max_norm is not None
  steps_per_epoch = input_pipeline.num_batches(num_train, config.batch_size)

  def lr_at(step_number: int) -> float:
    return learning_rate_at(config.learning_rate, config.lr_decay, step_number - 1)

  def write_row(epoch: int, step_number: int, report: dict[str, Any], norms: Any) -> None:
    """Appends a logged step to steps.jsonl (``norms`` None: not measured at that step)."""
    records.append_step(workdir, {
        "step": step_number, "epoch": epoch, "lr": lr_at(step_number),
        **{k: metrics.finite_or_none(v) for k, v in report.items()},
        "neuron_norms": None if norms is None else metrics.norm_stats_to_json(norms)})

  steps_run = (first_epoch - 1) * steps_per_epoch
  last_rows = records.read_metrics(workdir)[-1:]
  val_metrics: dict[str, Any] = {"loss": None, "accuracy": None}
  if last_rows:
    val_metrics = {"loss": last_rows[0]["val_loss"], "accuracy": last_rows[0]["val_accuracy"]}
  for epoch in range(first_epoch, config.epochs + 1):
    epoch_start = time.perf_counter()
    order = input_pipeline.epoch_order(shuffle_key, epoch, num_train, config.batch_size)
    state, totals, outcome = epoch_loop.train_epoch(
        steps.train, state, metrics.zeros(with_telemetry), train, order,
        first_step=(epoch - 1) * steps_per_epoch + 1, num_steps=steps_per_epoch,
        description=f"epoch {epoch}/{config.epochs}", log_every=config.log_every,
        write_row=functools.partial(write_row, epoch))
    steps_run += outcome.steps_run
    train_seconds = time.perf_counter() - epoch_start
    train_metrics = metrics.summarise(totals, prefix="train_")
    val_metrics = evaluate(steps.eval_val, state.params, val, steps.eval_batch_size, sizes.val)
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
      row["diverged_at_step"] = outcome.diverged_at
      records.append_metrics(workdir, row)
      tqdm.tqdm.write(f"epoch {epoch}: stopped, the loss is not finite at step "
                      f"{outcome.diverged_at}. " + _describe(row))
      return state, _Trained(val_metrics, steps_run, outcome.diverged_at)
    records.append_metrics(workdir, row)
    ckpts.save(epoch, state, config)
    workdir_policy.note_time(workdir, seconds_so_far())  # For a resume after a kill.
    tqdm.tqdm.write(f"epoch {epoch}: " + _describe(row))
  return state, _Trained(val_metrics, steps_run, None)
