"""The human-readable files of a workdir: config, per-epoch metrics, summary.

* ``config.json``: the :class:`~experiments.cifar10.configs.Config` of the run.
* ``metrics.jsonl``: one JSON object per epoch.
* ``summary.json``: test results and run facts, written at the end.

Non-finite numbers (a diverged run) are written as ``null``, so every file is
strict JSON.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from experiments.cifar10.configs import Config

__all__ = ["append_metrics", "read_metrics", "truncate_metrics", "write_config", "write_summary"]

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"


def write_config(workdir: pathlib.Path, config: Config) -> None:
  """Writes ``config.json``."""
  (workdir / CONFIG).write_text(json.dumps(config.to_json(), indent=2, allow_nan=False) + "\n")


def append_metrics(workdir: pathlib.Path, row: dict[str, Any]) -> None:
  """Appends one epoch's row to ``metrics.jsonl``."""
  with open(workdir / METRICS, "a") as f:
    f.write(json.dumps(row, allow_nan=False) + "\n")


def read_metrics(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """All rows of ``metrics.jsonl`` ([] if it does not exist)."""
  path = workdir / METRICS
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(workdir: pathlib.Path, last_epoch: int) -> None:
  """Drops rows after ``last_epoch`` (epochs a resumed run will redo)."""
  rows = read_metrics(workdir)
  kept = [row for row in rows if row["epoch"] <= last_epoch]
  if len(kept) != len(rows):
    (workdir / METRICS).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


def write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  """Writes ``summary.json``."""
  (workdir / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
