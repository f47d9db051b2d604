"""Orbax's and TensorStore's failures, told in one line and kept off the console.

A failed checkpoint save or read surfaces as an exception whose text is a page of
TensorStore's internal state, Orbax logs the traceback of each of its threads, and
the writes still in flight call back into an event loop that is closed by then.
:mod:`.checkpoints` raises its own one-line ``CheckpointError`` instead; these
helpers give it the words and keep the rest quiet.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["ignore_late_callbacks", "ignore_unretrieved_writes", "orbax_errors_unlogged",
           "short_error", "write_failure"]


def short_error(error: BaseException, limit: int = 300) -> str:
  """The first line of an error, at most ``limit`` characters: TensorStore appends
  dozens of lines of internal state that say nothing to a user."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text if len(text) <= limit else text[:limit] + " ..."
  return f"{type(error).__name__}: {text}"


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)


def write_failure(error: BaseException) -> str:
  """Why a save failed, in a few words: the OS's reason when TensorStore or Orbax quote
  one (they wrap it in a page of their own state), else the error's first line."""
  text = str(error)
  for number in _WRITE_ERRNOS:
    if os.strerror(number) in text:
      return os.strerror(number)
  return short_error(error)


def _from_orbax(record: logging.LogRecord) -> bool:
  return "orbax" not in record.pathname


@contextlib.contextmanager
def orbax_errors_unlogged() -> Iterator[None]:
  """Keeps Orbax's logged tracebacks of a failed save (a few hundred lines from its
  threads) off the console while :meth:`.checkpoints.Checkpoints.save` runs: the save raises
  :class:`.checkpoints.CheckpointError`, which says it in one line."""
  logger = logging.getLogger("absl")
  logger.addFilter(_from_orbax)
  try:
    yield
  finally:
    logger.removeFilter(_from_orbax)


def ignore_late_callbacks() -> None:
  """When a save fails, TensorStore's other writes still finish and call back into
  Orbax's event loop, which is closed by then; each call is an unraisable RuntimeError
  that Python would print with its traceback. Those (only those) are dropped."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_callbacks", False):
    return

  def hook(unraisable: Any) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)
  hook.drops_late_callbacks = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


def ignore_unretrieved_writes(directory: os.PathLike[str] | str) -> None:
  """After a failed save, the writes into ``directory`` that failed with it end as
  futures whose exception nobody retrieves, and asyncio logs each with its traceback when
  it is collected, after the one-line error. Those records (only those, naming
  ``directory``) are dropped."""
  where = str(directory)

  def keep(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("exception was never retrieved" in message and where in message)
  logging.getLogger("asyncio").addFilter(keep)
