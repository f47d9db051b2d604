"""Runs an experiment's sweep: skips complete runs, resumes partial ones.

A run lives in ``<runs_dir>/<budget>/<schedule>/<run name>/`` (the pipeline's
workdir). Its state is read from disk, so a sweep can be stopped at any time
and started again with the same command:

* ``complete``: ``config.json`` matches the run's config, and its records are
  whole: a ``summary.json`` and one row per epoch in ``metrics.jsonl`` (up to
  the epoch where the loss stopped being finite, for a run that diverged):
  skipped.
* ``partial``: ``config.json`` matches but there is no summary yet: trained
  with ``resume=True`` (from the last checkpoint, or from scratch if it died
  in its first epoch).
* ``new``: nothing there yet: trained.
* ``damaged``: its records cannot be read, or a ``summary.json`` sits next to
  epoch rows that are not whole, or (given an ``archive``) they are not byte
  for byte the run's intact kept copy (:func:`.archive.mismatch`): reported
  (one line naming the file and the problem) and trained again from scratch.
  The damaged records are set aside in ``replaced/`` until the new run
  completes (see :mod:`experiments.cifar10.workdir`); a damaged run is never
  read into a table.

A directory whose ``config.json`` holds another run's config is never
overwritten: the sweep stops before training anything and says which. Each run is trained under its
workdir's lock (:func:`experiments.cifar10.workdir.exclusive`), so two sweeps
on one runs directory never train the same run at once: the second stops
with one line naming the first.
Checkpoints (about 1 GB each for the article's network) of a complete run
are deleted unless ``keep_checkpoints``. With an ``archive``, each complete
run's records are also copied there (see :mod:`.archive`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Callable
from typing import Any, Literal

from experiments.cifar10 import configs, records
from experiments.cifar10 import workdir as workdir_policy
from experiments.cifar10.configs import Config
from experiments.cifar10.train import train_and_evaluate
from experiments.claims import archive as run_archive
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Experiment
from experiments.claims.host import write_host
from experiments.claims.runs import RunSpec

__all__ = ["DamagedRunError", "PlannedRun", "RunConflictError", "plan_sweep", "run_status",
           "run_sweep", "workdir_of"]

Status = Literal["complete", "partial", "new", "damaged"]


class RunConflictError(RuntimeError):
  """A run's directory holds a run with another config; the message says which."""


class DamagedRunError(RunConflictError):
  """A run's records cannot be read or are not whole; the message names the file."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """A run of a sweep, where it lives, and its status before the sweep (``problem``:
  what is wrong with a damaged one)."""
  spec: RunSpec
  workdir: pathlib.Path
  status: Status
  problem: str = ""


def workdir_of(runs_dir: str | pathlib.Path, budget: Budget, experiment: Experiment,
               spec: RunSpec) -> pathlib.Path:
  """``<runs_dir>/<budget>/<schedule>/<run name>``."""
  return pathlib.Path(runs_dir) / budget.name / experiment.schedule / spec.name


def _what_was_trained(config: Config) -> dict[str, Any]:
  """The pipeline's identity fields (not where the data is, nor the device layout), and
  the number of epochs: a complete run of fewer epochs is not this run."""
  return {**configs.identity_fields(config), "epochs": config.epochs}


def run_status(workdir: pathlib.Path, config: Config, kept: pathlib.Path | None = None
               ) -> Status:
  """Whether ``workdir`` holds a complete or partial run of ``config``, or none.

  Args:
    workdir: the run's directory.
    config: the run's config.
    kept: where the run's kept copy would be (see :mod:`.archive`); a complete run
      must match an intact one byte for byte. None: not compared.

  Raises:
    DamagedRunError: its records cannot be read, or a summary sits next to
      records that are not whole, or they differ from the intact kept copy.
    RunConflictError: ``workdir`` holds a run of another config.
  """
  try:
    status = _status(workdir, config)
  except records.RecordsError as e:
    raise DamagedRunError(str(e)) from e
  if status == "complete" and kept is not None:
    problem = run_archive.mismatch(workdir, kept)
    if problem is not None:
      raise DamagedRunError(f"{problem}: the run or its copy changed after it was kept")
  return status


def _status(workdir: pathlib.Path, config: Config) -> Status:
  config_file = workdir / records.CONFIG
  if not config_file.exists():
    if (workdir / records.SUMMARY).exists():
      raise RunConflictError(f"{workdir} has a summary.json but no config.json; it is not a "
                             f"run this sweep made. Move it away.")
    return "new"
  saved = records.read_config(workdir)
  try:  # Fields added to Config after the run was made take their defaults.
    saved_config = Config.from_json(saved)
  except (TypeError, ValueError) as e:
    raise RunConflictError(f"{config_file} is not a config this code can read ({e}). "
                           f"Move {workdir} away to rerun it.") from e
  ours, theirs = _what_was_trained(config), _what_was_trained(saved_config)
  if ours != theirs:
    diff = ", ".join(f"{k}: on disk {theirs[k]!r} vs sweep {ours[k]!r}"
                     for k in sorted(ours) if ours[k] != theirs[k])
    raise RunConflictError(f"{workdir} holds a run with a different config ({diff}). Nothing "
                           f"was changed; move it away, or use another --runs-dir.")
  summary = records.read_summary(workdir)
  if summary is None:
    return "partial"
  rows = records.read_metrics(workdir)
  epochs = [row["epoch"] for row in rows]
  diverged = summary.get("diverged") is True  # Its rows end at the epoch that diverged.
  if epochs != list(range(1, len(epochs) + 1)) or not epochs or not (
      len(epochs) == config.epochs or diverged):
    raise DamagedRunError(
        f"{workdir / records.METRICS} holds rows for epochs {epochs}, not one per epoch "
        f"1..{config.epochs}, next to a {records.SUMMARY}: the run's records are not whole")
  return "complete"


def plan_sweep(experiment: Experiment, budget: Budget, runs_dir: str | pathlib.Path,
               archive: pathlib.Path | None = None) -> list[PlannedRun]:
  """Every run of ``experiment`` under ``budget`` with its status (a complete run that
  differs from its intact copy in ``archive`` is damaged; None: not compared).

  Raises:
    RunConflictError: one or more run directories hold other configs (all are named).
  """
  planned, conflicts = [], []
  for spec in experiment.runs(budget):
    workdir = workdir_of(runs_dir, budget, experiment, spec)
    try:
      kept = None if archive is None else archive / spec.name
      planned.append(PlannedRun(spec, workdir, run_status(workdir, spec.config, kept)))
    except DamagedRunError as e:
      planned.append(PlannedRun(spec, workdir, "damaged", str(e)))
    except RunConflictError as e:
      conflicts.append(str(e))
  if conflicts:
    raise RunConflictError("\n".join(conflicts))
  return planned


def _drop_checkpoints(workdir: pathlib.Path) -> None:
  if (workdir / "checkpoints").exists():
    shutil.rmtree(workdir / "checkpoints")


def run_sweep(experiment: Experiment, budget: Budget, runs_dir: str | pathlib.Path, *,
              data_dir: str | None = None, keep_checkpoints: bool = False,
              max_runs: int | None = None, archive: pathlib.Path | None = None,
              train: Callable[..., Any] = train_and_evaluate,
              log: Callable[[str], None] = print) -> list[PlannedRun]:
  """Trains every run of ``experiment`` that is not complete yet, one after another.

  Args:
    experiment: the experiment (see :mod:`.experiment`).
    budget: its budget (see :mod:`.budgets`).
    runs_dir: root of the run directories.
    data_dir: tfds data directory passed to every run.
    keep_checkpoints: keep complete runs' checkpoints (default: delete them).
    max_runs: train at most this many runs (resumed or new), in plan order,
      then stop; None: all. For fitting a sweep into a time window.
    archive: where complete runs' records are copied (:func:`.archive.store`),
      each as soon as it completes, and any complete run's that is not there
      yet or whose copy there is damaged; a complete run that differs from its
      intact copy there is damaged (trained again). None: nowhere, no comparison.
    train: ``train(config, workdir, resume=...)``; the pipeline's
      ``train_and_evaluate`` unless a test replaces it.
    log: where progress lines go.

  Returns:
    The plan, with each run's status before the sweep.

  Raises:
    RunConflictError: before anything trains, if a run directory holds another config.

  A damaged run (see the module's docstring) is logged and trained again.
  """
  if max_runs is not None and max_runs < 1:
    raise ValueError(f"max_runs must be >= 1 or None, got {max_runs}.")
  plan = plan_sweep(experiment, budget, runs_dir, archive)
  counts = {s: sum(p.status == s for p in plan)
            for s in ("complete", "partial", "new", "damaged")}
  log(f"{experiment.key} | budget {budget.name} | {len(plan)} runs: {counts['complete']} "
      f"complete (skipped), {counts['partial']} to resume, {counts['new']} to start"
      + (f", {counts['damaged']} damaged (to train again)" if counts["damaged"] else ""))
  trained = 0
  for i, run in enumerate(plan, 1):
    if run.status != "complete" and max_runs is not None and trained == max_runs:
      log(f"stopping after {trained} runs (max_runs); the rest stay for the next sweep")
      break
    with workdir_policy.exclusive(run.workdir):  # One writer per run, across sweeps.
      kept = None if archive is None else archive / run.spec.name
      try:  # Another sweep may have run it since it was planned.
        status, problem = run_status(run.workdir, run.spec.config, kept), ""
      except DamagedRunError as e:
        status, problem = "damaged", str(e)
      trained_now = status != "complete"
      if trained_now:
        trained += 1
        log(f"[{i}/{len(plan)}] {run.spec.name} ({status}) -> {run.workdir}")
        config = dataclasses.replace(run.spec.config, data_dir=data_dir)
        if status == "damaged":
          log(f"  damaged: {problem}; training it again (the old records wait in "
              f"{run.workdir / workdir_policy.REPLACED} until the new run completes)")
          train(config, run.workdir, resume=False, overwrite=True)
        else:
          train(config, run.workdir, resume=status == "partial")
        write_host(run.workdir)
        status = run_status(run.workdir, run.spec.config)
      if kept is not None and status == "complete" and (
          trained_now or not run_archive.intact(kept)):
        run_archive.store(run.workdir, archive)
      if not keep_checkpoints:
        _drop_checkpoints(run.workdir)
  return plan
