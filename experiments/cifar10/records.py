"""The human-readable files of a workdir: config, per-epoch metrics, summary.

* ``config.json``: the :class:`~experiments.cifar10.configs.Config` of the run.
* ``metrics.jsonl``: one JSON object per epoch.
* ``steps.jsonl``: one JSON object per logged step (``Config.log_every``).
* ``summary.json``: test results and run facts, written at the end.

Non-finite numbers (a diverged run) are written as ``null``, so every file is
strict JSON. In a multi-process run only process 0 writes (the others' calls
do nothing), so each file is written once.

A process can be killed at any moment: whole files are written to a temporary
file and renamed into place, so they are old or new, never torn; a JSONL row
is one ``write`` ending in a newline, and a last line without its newline (a
row torn by a kill) is not a row: readers skip it and the next rewrite drops it.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

from experiments.cifar10.configs import Config
from experiments.cifar10.distributed import primary_only

__all__ = [
    "append_metrics", "append_step", "read_metrics", "read_steps", "truncate_metrics",
    "truncate_steps", "write_config", "write_summary",
]

CONFIG, METRICS, SUMMARY, STEPS = "config.json", "metrics.jsonl", "summary.json", "steps.jsonl"


def _write_atomically(path: pathlib.Path, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


@primary_only
def write_config(workdir: pathlib.Path, config: Config) -> None:
  """Writes ``config.json``."""
  _write_atomically(workdir / CONFIG,
                    json.dumps(config.to_json(), indent=2, allow_nan=False) + "\n")


def _append_jsonl(path: pathlib.Path, row: dict[str, Any]) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(row, allow_nan=False) + "\n")


def _complete_lines(path: pathlib.Path) -> tuple[list[str], bool]:
  """The newline-terminated lines of ``path``, and whether a torn last line followed."""
  text = path.read_text() if path.exists() else ""
  lines = text.split("\n")
  return [line for line in lines[:-1] if line.strip()], lines[-1] != ""


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  return [json.loads(line) for line in _complete_lines(path)[0]]


def _truncate_jsonl(path: pathlib.Path, key: str, last: int) -> None:
  """Drops the rows whose ``key`` exceeds ``last``, and a torn last line; leaves the
  file alone otherwise."""
  lines, torn = _complete_lines(path)
  rows = [json.loads(line) for line in lines]
  kept = [row for row in rows if row[key] <= last]
  if len(kept) != len(rows) or torn:
    _write_atomically(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


@primary_only
def append_metrics(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Appends one epoch's row to ``metrics.jsonl``."""
  _append_jsonl(workdir / METRICS, row)


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """All rows of ``metrics.jsonl`` ([] if it does not exist)."""
  return _read_jsonl(workdir / METRICS)


@primary_only
def truncate_metrics(workdir: pathlib.Path, last_epoch: int) -> None:
  """Drops rows after ``last_epoch`` (epochs a resumed run will redo)."""
  _truncate_jsonl(workdir / METRICS, "epoch", last_epoch)


@primary_only
def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  """Writes ``summary.json``."""
  _write_atomically(workdir / SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")


@primary_only
def append_step(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Appends one logged step's row to ``steps.jsonl``."""
  _append_jsonl(workdir / STEPS, row)


def read_steps(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """All rows of ``steps.jsonl`` ([] if it does not exist)."""
  return _read_jsonl(workdir / STEPS)


@primary_only
def truncate_steps(workdir: pathlib.Path, last_step: int) -> None:
  """Drops rows after optimizer step ``last_step`` (steps a resumed run will redo)."""
  _truncate_jsonl(workdir / STEPS, "step", last_step)
