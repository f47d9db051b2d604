"""The human-readable files of a workdir: config, per-epoch metrics, summary.

* ``config.json``: the :class:`~experiments.cifar10.configs.Config` of the run.
* ``metrics.jsonl``: one JSON object per epoch.
* ``steps.jsonl``: one JSON object per logged step (``Config.log_every``).
* ``summary.json``: test results and run facts, written at the end.

Non-finite numbers (a diverged run) are written as ``null``, so every file is
strict JSON. In a multi-process run only process 0 writes (the others' calls
do nothing), so each file is written once.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jax

from experiments.cifar10.configs import Config

__all__ = [
    "append_metrics", "append_step", "read_metrics", "read_steps", "truncate_metrics",
    "truncate_steps", "write_config", "write_summary",
]

CONFIG, METRICS, SUMMARY, STEPS = "config.json", "metrics.jsonl", "summary.json", "steps.jsonl"


def _primary_only(write):
  """Makes a writer a no-op outside process 0 of a multi-process run."""
  @functools.wraps(write)
  def wrapper(*args, **kwargs):
    if jax.process_index() == 0:
      write(*args, **kwargs)
  return wrapper


@_primary_only
def write_config(workdir: pathlib.Path, config: Config) -> None:
  """Writes ``config.json``."""
  (workdir / CONFIG).write_text(json.dumps(config.to_json(), indent=2, allow_nan=False) + "\n")


def _append_jsonl(path: pathlib.Path, row: dict[str, Any]) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(row, allow_nan=False) + "\n")


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_jsonl(path: pathlib.Path, key: str, last: int) -> None:
  """Drops the rows whose ``key`` exceeds ``last``; leaves the file alone otherwise."""
  rows = _read_jsonl(path)
  kept = [row for row in rows if row[key] <= last]
  if len(kept) != len(rows):
    path.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


@_primary_only
def append_metrics(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Appends one epoch's row to ``metrics.jsonl``."""
  _append_jsonl(workdir / METRICS, row)


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """All rows of ``metrics.jsonl`` ([] if it does not exist)."""
  return _read_jsonl(workdir / METRICS)


@_primary_only
def truncate_metrics(workdir: pathlib.Path, last_epoch: int) -> None:
  """Drops rows after ``last_epoch`` (epochs a resumed run will redo)."""
  _truncate_jsonl(workdir / METRICS, "epoch", last_epoch)


@_primary_only
def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  """Writes ``summary.json``."""
  (workdir / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


@_primary_only
def append_step(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Appends one logged step's row to ``steps.jsonl``."""
  _append_jsonl(workdir / STEPS, row)


def read_steps(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """All rows of ``steps.jsonl`` ([] if it does not exist)."""
  return _read_jsonl(workdir / STEPS)


@_primary_only
def truncate_steps(workdir: pathlib.Path, last_step: int) -> None:
  """Drops rows after optimizer step ``last_step`` (steps a resumed run will redo)."""
  _truncate_jsonl(workdir / STEPS, "step", last_step)
