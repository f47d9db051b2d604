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
Files are created with the modes the umask allows, like any other file.

A damaged file (a line that is no JSON object, a missing key, junk bytes, a
directory in its place) raises :class:`RecordsError`, whose message is
"FILE, line N: what is wrong".
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, NamedTuple

from experiments.cifar10.configs import Config
from experiments.cifar10.distributed import primary_only

__all__ = [
    "RecordsError", "append_metrics", "append_step", "read_config", "read_json", "read_metrics",
    "read_steps", "read_summary", "truncate_metrics", "truncate_steps", "write_config",
    "write_summary", "write_text",
]

CONFIG, METRICS, SUMMARY, STEPS = "config.json", "metrics.jsonl", "summary.json", "steps.jsonl"


class RecordsError(ValueError):
  """A record file is damaged ("FILE, line N: what is wrong"), or cannot be written
  ("FILE: cannot be written (why)")."""


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_text(path: pathlib.Path, text: str) -> None:
  """Writes ``path`` whole or not at all (a temporary file renamed into place), with the
  mode a new file gets under the umask."""
  try:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  except OSError as e:
    raise RecordsError(f"{path}: cannot be written ({e.strerror or e})") from e
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException as e:
    pathlib.Path(tmp).unlink(missing_ok=True)
    if isinstance(e, OSError):
      raise RecordsError(f"{path}: cannot be written ({e.strerror or e})") from e
    raise


@primary_only
def write_config(workdir: pathlib.Path, config: Config) -> None:
  """Writes ``config.json``."""
  write_text(workdir / CONFIG,
                    json.dumps(config.to_json(), indent=2, allow_nan=False) + "\n")


def _append_jsonl(path: pathlib.Path, row: dict[str, Any]) -> None:
  try:
    with open(path, "a") as f:
      f.write(json.dumps(row, allow_nan=False) + "\n")
  except OSError as e:  # A torn row (no newline) is not read as a row, nor kept.
    raise RecordsError(f"{path}: cannot be written ({e.strerror or e})") from e


def _read(path: pathlib.Path) -> str:
  """The text of ``path`` ("" if it does not exist)."""
  try:
    return path.read_text()
  except FileNotFoundError:
    return ""
  except IsADirectoryError:
    raise RecordsError(f"{path}: is a directory, not a file") from None
  except UnicodeDecodeError as e:
    line = path.read_bytes()[:e.start].count(b"\n") + 1
    raise RecordsError(f"{path}, line {line}: not UTF-8 text (junk bytes)") from None


def _read_jsonl(path: pathlib.Path, key: str) -> tuple[list[dict[str, Any]], bool]:
  """The rows of ``path``, each with an integer ``key``, and whether a torn last line
  followed them."""
  lines = _read(path).split("\n")
  rows = []
  for number, line in enumerate(lines[:-1], 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      raise RecordsError(f"{path}, line {number}: not a JSON object") from None
    if not isinstance(row, dict):
      raise RecordsError(f"{path}, line {number}: not a JSON object")
    if not isinstance(row.get(key), int) or isinstance(row.get(key), bool):
      raise RecordsError(f"{path}, line {number}: no integer {key!r}")
    rows.append(row)
  return rows, lines[-1] != ""


class _JsonLines(NamedTuple):
  """A JSON Lines record of a workdir: one row per line, each with an integer ``key``,
  appended as the run goes and truncated to the rows that a resumed run will not redo."""
  name: str
  key: str

  @primary_only
  def append(self, workdir: pathlib.Path, row: dict[str, Any]) -> None:
    """Appends ``row`` to the file."""
    _append_jsonl(workdir / self.name, row)

  def read(self, workdir: pathlib.Path) -> list[dict[str, Any]]:
    """All rows of the file ([] if it does not exist)."""
    return _read_jsonl(workdir / self.name, self.key)[0]

  @primary_only
  def truncate(self, workdir: pathlib.Path, last: int) -> None:
    """Drops the rows whose ``key`` exceeds ``last`` (what a resumed run will redo),
    and a torn last line; leaves the file alone otherwise."""
    path = workdir / self.name
    rows, torn = _read_jsonl(path, self.key)
    kept = [row for row in rows if row[self.key] <= last]
    if len(kept) != len(rows) or torn:
      write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


_EPOCH_ROWS = _JsonLines(METRICS, "epoch")  # One row per epoch.
_STEP_ROWS = _JsonLines(STEPS, "step")  # One row per logged optimizer step.
append_metrics, read_metrics, truncate_metrics = (
    _EPOCH_ROWS.append, _EPOCH_ROWS.read, _EPOCH_ROWS.truncate)
append_step, read_steps, truncate_steps = (
    _STEP_ROWS.append, _STEP_ROWS.read, _STEP_ROWS.truncate)


@primary_only
def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  """Writes ``summary.json``."""
  write_text(workdir / SUMMARY, json.dumps(summary, indent=2, allow_nan=False) + "\n")


def read_config(workdir: pathlib.Path) -> dict[str, Any] | None:
  """``config.json`` as JSON (None if it does not exist)."""
  return read_json(workdir / CONFIG)


def read_summary(workdir: pathlib.Path) -> dict[str, Any] | None:
  """``summary.json`` (None if it does not exist)."""
  return read_json(workdir / SUMMARY)


def read_json(path: pathlib.Path) -> dict[str, Any] | None:
  """The JSON object in ``path`` (None if it does not exist).

  Raises:
    RecordsError: ``path`` is damaged ("FILE, line N: what is wrong").
  """
  if not path.exists() and not path.is_symlink():
    return None
  text = _read(path)
  try:
    summary = json.loads(text)
  except ValueError as e:
    line = getattr(e, "lineno", 1)
    raise RecordsError(f"{path}, line {line}: not JSON") from None
  if not isinstance(summary, dict):
    raise RecordsError(f"{path}, line 1: not a JSON object")
  return summary
