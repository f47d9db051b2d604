"""What machine trained a run: ``host.json`` beside the pipeline's files.

The pipeline's ``summary.json`` records JAX's view (backend, device kind,
device count, CPU count); this adds the CPU model and OS
(:func:`experiments.machine.describe_machine`), so that a report can say which
hardware produced each number. A damaged ``host.json`` (no JSON object, no
``cpu_model`` string, junk bytes, a directory in its place) raises
:class:`~experiments.cifar10.records.RecordsError`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from experiments.cifar10 import records
from experiments.machine import describe_machine

__all__ = ["HOST", "read_host", "write_host"]

HOST = "host.json"


def write_host(workdir: pathlib.Path) -> None:
  """Writes ``host.json`` (this machine) into ``workdir``."""
  records.write_text(workdir / HOST, json.dumps(describe_machine(), indent=2) + "\n")


def read_host(workdir: pathlib.Path) -> dict[str, Any] | None:
  """``host.json`` of ``workdir``, or None if it was not recorded.

  Raises:
    RecordsError: ``host.json`` is damaged, or has no ``cpu_model`` string (the field a
      report reads).
  """
  path = workdir / HOST
  host = records.read_json(path)
  if host is not None and not isinstance(host.get("cpu_model"), str):
    what = "null" if host.get("cpu_model", ...) is None else (
        "missing" if "cpu_model" not in host else "not a string")
    raise records.RecordsError(f"{path}: 'cpu_model' is {what}; expected the CPU's name")
  return host
