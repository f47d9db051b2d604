"""What machine this is, for every results page and benchmark header.

Every figure names the hardware that produced it; these are the words for it.
"""

from __future__ import annotations

import os
import pathlib
import platform
from typing import Any

__all__ = ["cpu_model", "describe_machine"]


def cpu_model() -> str:
  """The CPU's model name from ``/proc/cpuinfo`` (runs of spaces folded), or what
  :mod:`platform` knows off Linux."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return " ".join(line.split(":", 1)[1].split())
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def describe_machine() -> dict[str, Any]:
  """CPU model, CPU count and OS of this machine."""
  return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "platform": platform.platform()}
