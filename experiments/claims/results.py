"""Reading runs back from disk: config, per-epoch metrics, step log, summary."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from experiments.cifar10 import records
from experiments.claims.host import read_host
from experiments.claims.specs import RunSpec

__all__ = ["RunResult", "load_result"]


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What one run left on disk (``summary`` is None until it completes).

  Attributes:
    spec: the run.
    workdir: its directory.
    summary: ``summary.json`` (None while incomplete).
    metrics: rows of ``metrics.jsonl`` (one per epoch).
    steps: rows of ``steps.jsonl`` (one per logged step; [] without ``log_every``).
    host: ``host.json`` (the machine that trained it; None if not recorded).
  """
  spec: RunSpec
  workdir: pathlib.Path
  summary: dict[str, Any] | None
  metrics: list[dict[str, Any]]
  steps: list[dict[str, Any]]
  host: dict[str, Any] | None = None

  @property
  def complete(self) -> bool:
    return self.summary is not None

  @property
  def diverged(self) -> bool:
    """The pipeline stopped the run at a NaN/inf loss (summaries from before
    divergence was recorded count as not diverged)."""
    return bool(self.summary and self.summary.get("diverged"))

  @property
  def last_epoch(self) -> dict[str, Any]:
    """The last row of ``metrics.jsonl`` ({} if none)."""
    return self.metrics[-1] if self.metrics else {}


def load_result(spec: RunSpec, workdir: pathlib.Path) -> RunResult:
  """Reads the run in ``workdir``; missing files read as empty."""
  summary_file = workdir / records.SUMMARY
  summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
  return RunResult(spec, workdir, summary, records.read_metrics(workdir),
                   records.read_steps(workdir), read_host(workdir))
