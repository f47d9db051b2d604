"""What machine trained a run: ``host.json`` beside the pipeline's files.

The pipeline's ``summary.json`` records JAX's view (backend, device kind,
device count, CPU count); this adds the CPU model and OS
(:func:`experiments.machine.describe_machine`), so that a report can say which
hardware produced each number.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from experiments.machine import describe_machine

__all__ = ["HOST", "read_host", "write_host"]

HOST = "host.json"


def write_host(workdir: pathlib.Path) -> None:
  """Writes ``host.json`` (this machine) into ``workdir``."""
  (workdir / HOST).write_text(json.dumps(describe_machine(), indent=2) + "\n")


def read_host(workdir: pathlib.Path) -> dict[str, Any] | None:
  """``host.json`` of ``workdir``, or None if it was not recorded."""
  path = workdir / HOST
  return json.loads(path.read_text()) if path.exists() else None
