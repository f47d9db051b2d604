"""The training loop of an epoch, and evaluation, over compiled steps.

The loop dispatches one jitted step after another and never waits for the step
it has just dispatched: it reads a small report back only every few steps, one
step behind the device (:func:`train_epoch`), so dispatch never waits for the
host. Every device-to-host read goes through :func:`read_host`, so that tests
can count them.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import tqdm

from experiments.cifar10 import distributed, input_pipeline, metrics
from experiments.cifar10.input_pipeline import Split

__all__ = ["READ_EVERY", "READ_INTERVAL_S", "EpochOutcome", "Report", "evaluate", "read_host",
           "train_epoch"]

Params = dict[str, Any]
State = Any  # The train state, e.g. a :class:`~experiments.cifar10.steps.TrainState`.


class Report(NamedTuple):
  """What the host reads of one train step, packed so that one read gets all of it.

  ``batch`` holds the batch's mean ``loss``, ``accuracy`` and the constraint's
  telemetry; ``epoch_loss`` is the running mean loss of the epoch so far,
  which stays non-finite once any step of the epoch was.
  """
  batch: metrics.Totals
  epoch_loss: jax.Array


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


def train_epoch(train_fn: Callable, state: State, totals: metrics.Totals, data: Split,
                order: jax.Array, *, first_step: int, num_steps: int, description: str,
                log_every: int = 0,
                write_row: Callable[[int, dict[str, Any], Any], None] | None = None,
                disable_bar: bool = False
                ) -> tuple[State, metrics.Totals, EpochOutcome]:
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
      state, totals, report = train_fn(state, totals, data, order, jnp.int32(i), jnp.int32(step))
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
