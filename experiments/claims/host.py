"""What machine trained a run: ``host.json`` beside the pipeline's files.

The pipeline's ``summary.json`` records JAX's view (backend, device kind,
device count, CPU count); this adds the CPU model and OS, so that a report can
say which hardware produced each number.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
from typing import Any

__all__ = ["HOST", "describe_host", "read_host", "write_host"]

HOST = "host.json"


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def describe_host() -> dict[str, Any]:
  """CPU model, CPU count and OS of this machine."""
  return {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
          "platform": platform.platform()}


def write_host(workdir: pathlib.Path) -> None:
  """Writes ``host.json`` (this machine) into ``workdir``."""
  (workdir / HOST).write_text(json.dumps(describe_host(), indent=2) + "\n")


def read_host(workdir: pathlib.Path) -> dict[str, Any] | None:
  """``host.json`` of ``workdir``, or None if it was not recorded."""
  path = workdir / HOST
  return json.loads(path.read_text()) if path.exists() else None
