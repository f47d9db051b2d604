"""Process control for multi-host runs: joining a job, and which process speaks.

:func:`initialize_distributed` starts a multi-process job
(``jax.distributed.initialize``); everything else works unchanged in one
process. Process 0 is the *primary*: it alone prints the console lines and
writes the workdir's JSON files (:func:`primary_only`), while every process
takes part in computation and in Orbax's checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax

__all__ = ["DistributedError", "console_of_primary_only", "initialize_distributed",
           "is_primary", "primary_only"]

F = TypeVar("F", bound=Callable[..., Any])


class DistributedError(ValueError):
  """The multi-process job cannot start; the message says what to pass."""


DEFAULT_TIMEOUT_S = 300  # JAX's own default for the other processes to join.


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           timeout_s: int | None = None) -> None:
  """Joins a multi-process JAX job (``jax.distributed.initialize``).

  Call it once per process, before anything else touches JAX. On Cloud TPU
  pod slices (and SLURM, Open MPI, ...) JAX finds all three arguments itself;
  elsewhere pass them, or set ``JAX_COORDINATOR_ADDRESS`` (read by JAX),
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. CPU collectives between
  processes go through gloo.

  It says which job it joins, and if the job is not complete within
  ``timeout_s`` seconds (default 300), the process prints one line and exits
  with code 1 (JAX itself aborts the process, with a C++ stack trace).

  Raises:
    DistributedError: the arguments are missing and JAX found no cluster
      to take them from, or JAX was already in use.
  """
  try:
    num_processes = _from_env(num_processes, "JAX_NUM_PROCESSES")
    process_id = _from_env(process_id, "JAX_PROCESS_ID")
  except ValueError as e:
    raise DistributedError(str(e)) from e
  # Only the CPU backend uses it; set before the backends start.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the address " \
      "JAX detects"
  processes = num_processes if num_processes is not None else "all"
  print(f"--distributed: process {process_id if process_id is not None else '?'} waits up to "
        f"{timeout_s} s for {processes} processes at {address}", file=sys.stderr, flush=True)
  timer = threading.Timer(timeout_s, _give_up, (timeout_s, processes, address))
  timer.daemon = True
  timer.start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s + 60)  # Ours fires first.
  except (ValueError, TypeError) as e:
    raise DistributedError(
        f"jax.distributed.initialize failed: {str(e).rstrip('.')}. Outside a cluster that "
        f"JAX detects by itself (Cloud TPU pod slices, SLURM, Open MPI), pass "
        f"--coordinator-address HOST:PORT (process 0's host), --num-processes N and "
        f"--process-id I to every process.") from e
  except RuntimeError as e:
    raise DistributedError(
        f"jax.distributed.initialize failed: {str(e).rstrip('.')}. It must run before any "
        f"other JAX call in the process.") from e
  finally:
    timer.cancel()


def _give_up(timeout_s: int, processes: int | str, address: str) -> None:
  print(f"error: --distributed: {processes} processes did not all join at {address} within "
        f"{timeout_s} s (--distributed-timeout). Start every process with the same "
        f"--coordinator-address and --num-processes, and a distinct --process-id.",
        file=sys.stderr, flush=True)
  os._exit(1)  # JAX's wait cannot be interrupted from Python.


def _from_env(value: int | None, name: str) -> int | None:
  if value is not None or not os.environ.get(name):
    return value
  try:
    return int(os.environ[name])
  except ValueError:
    raise ValueError(f"${name} must be an integer, got {os.environ[name]!r}.") from None


def is_primary() -> bool:
  """True in the process that prints and writes files (process 0)."""
  return jax.process_index() == 0


def primary_only(write: F) -> F:
  """Makes a writer a no-op outside the primary process, so each file is written once."""
  @functools.wraps(write)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    if is_primary():
      return write(*args, **kwargs)
    return None
  return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def console_of_primary_only() -> Iterator[None]:
  """Drops the other processes' stdout (the start-up and per-epoch lines), so a
  multi-host run prints them once. Errors (stderr) still show everywhere."""
  if is_primary():
    yield
    return
  with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
    yield
