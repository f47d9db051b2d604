"""A benchmark variant in its own process, driven line by line from the parent.

Benchmarks that compare variants which cannot share a process (Keras picks its
backend once per process; a malloc is chosen before a process starts) start one
worker each, wait for its ``ready`` line, then time them in interleaved rounds:
the parent writes one request line, the worker answers one line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["Worker", "rounds_parser"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Worker:
  """The parent's handle on one variant's process.

  Args:
    label: the variant's name, for errors.
    argv: the worker's command line; it prints ``ready`` once built.
    env: its environment (None: this process's).
  """

  def __init__(self, label: str, argv: Sequence[str], env: Mapping[str, str] | None = None):
    self.label = label
    self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=None if env is None else dict(env), cwd=_ROOT)
    if self._read() != "ready":
      raise RuntimeError(f"{label} failed to start (see its error above)")

  def _read(self) -> str:
    assert self.proc.stdout is not None
    line = self.proc.stdout.readline().strip()
    if not line:
      self.proc.wait()
      raise RuntimeError(f"{self.label} exited with code {self.proc.returncode}")
    return line

  def request(self, line: str) -> str:
    """Sends one request line and returns the worker's one-line answer."""
    assert self.proc.stdin is not None
    self.proc.stdin.write(line + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    assert self.proc.stdin is not None
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def rounds_parser(doc: str | None, *, rounds: int, steps: int, steps_help: str
                  ) -> argparse.ArgumentParser:
  """The command line of a benchmark timed in interleaved rounds: ``--batch-size``,
  ``--rounds`` and ``--steps``."""
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=rounds)
  parser.add_argument("--steps", type=int, default=steps, help=steps_help)
  return parser

