"""What a run may do with its workdir: one writer, no finished run overwritten.

A workdir holds one run: ``config.json``, ``metrics.jsonl``, ``steps.jsonl``,
``summary.json`` (see :mod:`.records`) and ``checkpoints/``. The rules:

* **One writer.** A run holds an exclusive lock on ``<workdir>/.lock``
  (``flock``, so the kernel releases it when the holder dies, even by
  ``kill -9``); a second run on the same workdir stops at once, naming the
  holder's pid and host.
* **Nothing finished is overwritten.** A workdir that holds a run's records
  (metric or step rows, or a summary) is only trained into again with
  ``resume`` (continuing from its last checkpoint) or ``overwrite``. A resume
  that cannot continue a finished run (its checkpoints are gone) is refused.
* **Old records are replaced only by new ones.** ``overwrite`` moves the old
  run into ``<workdir>/replaced/`` and deletes it only once the new run has
  written its summary.
* **A summary describes the records beside it**: it is removed before a
  resumed run changes them, and written again at the end. The compute time
  of the run so far is carried over, so ``total_seconds`` accumulates across
  resumes: from the summary of a finished run, or, for a run that stopped
  before its end (killed, interrupted), from the time noted after its last
  saved epoch (:func:`note_time`; the part of an epoch after that is redone,
  and not counted).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

from experiments.cifar10 import checkpoints, distributed, records
from experiments.cifar10.configs import Config

__all__ = ["Resumption", "WorkdirError", "check_workdir", "exclusive", "finish",
           "make_workdir", "note_time", "open_checkpoints", "start_records"]

LOCK = ".lock"
REPLACED = "replaced"  # Where ``overwrite`` keeps the old run until the new one is done.
_EARLIER = ".earlier_seconds"  # The compute time of a resumed run so far, while it runs.
_RECORDS = (records.METRICS, records.STEPS, records.SUMMARY, records.CONFIG, "checkpoints")


class WorkdirError(RuntimeError):
  """The workdir cannot be used (it is a file, cannot be written, is in use, or holds
  records that would be lost); nothing was changed."""


def check_workdir(workdir: pathlib.Path) -> None:
  """Fails early, before any data is read, if ``workdir`` is no directory or cannot be
  created or written. Leaves nothing behind (a probe is made and removed)."""
  if str(workdir) in ("", "."):
    raise WorkdirError("--workdir is empty. Nothing was written.")
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir} exists and is not a directory. Nothing was "
                       f"written.")
  if not distributed.is_primary():  # The primary probes; the others' probes would race it.
    return
  missing = [p for p in (workdir, *workdir.parents) if not p.exists()]
  try:
    if missing:  # Can its top-most missing directory be made?
      missing[-1].mkdir()
      missing[-1].rmdir()
    else:
      fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write_test")
      os.close(fd)
      os.unlink(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir} cannot be written: {e.strerror or e}. Nothing "
                       f"was written.") from e


def make_workdir(workdir: pathlib.Path) -> None:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir} cannot be created: {e.strerror or e}.") from e


_held: dict[pathlib.Path, int] = {}  # Locks this process holds: path -> depth.


@contextlib.contextmanager
def exclusive(workdir: pathlib.Path) -> Iterator[None]:
  """Holds ``workdir``'s lock (in the primary process; others share the primary's).

  Re-entrant within a process, so a sweep can hold a run's lock around
  ``train_and_evaluate``, which takes it too. A workdir this creates only to
  hold the lock is removed again if the block fails.

  Raises:
    WorkdirError: another live process holds the lock (its pid and host are named).
  """
  path = (workdir / LOCK).absolute()
  if not distributed.is_primary() or path in _held:
    _held[path] = _held.get(path, 0) + 1
    try:
      yield
    finally:
      _held[path] -= 1
      if not _held[path]:
        del _held[path]
    return
  created = [p for p in (workdir, *workdir.parents) if not p.exists()]
  make_workdir(workdir)
  try:
    fd = _lock(path, workdir)
  except BaseException:
    _remove_if_empty(created)
    raise
  _held[path] = 1
  try:
    yield
  finally:
    del _held[path]
    path.unlink()  # While still holding it, so no one locks a file that is gone (_lock).
    os.close(fd)  # Releases the lock.
    _remove_if_empty(created)


def _lock(path: pathlib.Path, workdir: pathlib.Path) -> int:
  """Locks ``path`` (creating it) and writes the holder's line into it; returns its fd."""
  for _ in range(100):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # No O_TRUNC: the holder's line stays.
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise WorkdirError(f"{workdir} cannot be locked: {e.strerror or e}. Nothing was "
                           f"changed.") from e
      raise WorkdirError(f"{workdir} is in use by {holder}: one run per workdir. Wait for "
                         f"it to finish, or use another --workdir. Nothing was changed."
                         ) from None
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:  # Else its holder removed it between our open and flock: try again.
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
      return fd
    os.close(fd)
  raise WorkdirError(f"{workdir} could not be locked: its lock file keeps changing.")


def _remove_if_empty(created: list[pathlib.Path]) -> None:
  """Removes the directories a run created, innermost first, if they are empty."""
  for p in created:
    with contextlib.suppress(OSError):
      p.rmdir()


def _finished_records(workdir: pathlib.Path) -> list[str]:
  """The files of ``workdir`` that hold a run's results (rows or a summary)."""
  return [name for name in (records.METRICS, records.STEPS, records.SUMMARY)
          if (workdir / name).exists() and (workdir / name).stat().st_size > 0]


class Resumption(NamedTuple):
  """Where a run starts: its checkpoints (None: none yet) and the epoch to resume from
  (None: from scratch)."""
  checkpoints: checkpoints.Checkpoints | None
  epoch: int | None


def open_checkpoints(config: Config, workdir: pathlib.Path, *, resume: bool,
                     overwrite: bool = False) -> Resumption:
  """Checks that the run may use ``workdir``, and opens its checkpoints. Creates nothing.

  Raises:
    WorkdirError: ``workdir`` holds a run's records that this run would lose.
    checkpoints.CheckpointError: a checkpoint is in the way, beyond ``config``'s
      epochs, damaged, or of another config.
  """
  found = _finished_records(workdir)
  directory = workdir / "checkpoints"
  if overwrite:
    return Resumption(None, None)
  if resume:  # Every record is read before anything changes.
    try:
      records.read_summary(workdir)
      records.read_metrics(workdir)
      records.read_steps(workdir)
    except records.RecordsError as e:
      raise WorkdirError(f"{e}. Nothing was changed: repair or move that file away, or use a "
                         f"new --workdir.") from e
  ckpts = None
  if directory.is_dir():
    if resume:
      checkpoints.set_aside_unfinished(directory)
    ckpts = checkpoints.Checkpoints(directory, max_to_keep=config.keep_checkpoints,
                                    create=False)
  try:
    latest = None if ckpts is None else ckpts.latest_epoch()
    if latest is not None and not resume:
      raise checkpoints.CheckpointError(
          f"{workdir} already holds checkpoints (up to epoch {latest}). Pass --resume to "
          f"continue that run, --overwrite to replace it, or use a new --workdir. Nothing "
          f"was changed.")
    if found and not resume:
      raise WorkdirError(
          f"{workdir} already holds a run's records ({', '.join(found)}). Pass --resume to "
          f"continue it, --overwrite to replace it, or use a new --workdir. Nothing was "
          f"changed.")
    if latest is None and records.SUMMARY in found:
      raise WorkdirError(
          f"{workdir} holds a finished run ({records.SUMMARY}) but no checkpoint to "
          f"continue it from. Pass --overwrite to train it again from scratch, or use a new "
          f"--workdir. Nothing was changed.")
    if latest is not None and latest > config.epochs:
      raise checkpoints.CheckpointError(
          f"{workdir} holds a checkpoint of epoch {latest}, beyond --epochs {config.epochs}. "
          f"Pass --epochs {latest} or more, or use a new --workdir. Nothing was changed.")
    if latest is not None:
      ckpts.check_config(latest, config)
  except BaseException:
    if ckpts is not None:
      ckpts.close()
    raise
  return Resumption(ckpts, latest)


@distributed.primary_only
def _set_aside(workdir: pathlib.Path) -> None:
  """Moves the old run of ``workdir`` into ``replaced/`` (keeping an older one there)."""
  aside = workdir / REPLACED
  keep = not aside.exists()
  aside.mkdir(exist_ok=True)
  for name in (*_RECORDS, _EARLIER):
    path = workdir / name
    if not path.exists():
      continue
    if keep:
      os.replace(path, aside / name)
    elif path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()


def start_records(workdir: pathlib.Path, config: Config, *, resume_epoch: int | None,
                  steps_per_epoch: int, overwrite: bool = False) -> float:
  """Readies the records for a run that starts after ``resume_epoch``; returns the
  compute time (s) that the run has taken before this process.

  Removes the summary first (the records are about to change), keeping its time;
  then drops the rows that the coming epochs will redo, and writes the config.
  """
  make_workdir(workdir)
  if overwrite:
    _set_aside(workdir)
  earlier = _carry_time(workdir) if resume_epoch is not None else 0.0
  records.truncate_metrics(workdir, resume_epoch or 0)
  records.truncate_steps(workdir, (resume_epoch or 0) * steps_per_epoch)
  records.write_config(workdir, config)
  return earlier


@distributed.primary_only
def _carry_time_primary(workdir: pathlib.Path) -> float:
  earlier = workdir / _EARLIER
  summary = records.read_summary(workdir)
  if summary is not None:
    seconds = summary.get("total_seconds")
    seconds = float(seconds) if isinstance(seconds, (int, float)) else 0.0
    note_time(workdir, seconds)
    (workdir / records.SUMMARY).unlink()
    return seconds
  if earlier.exists():
    try:
      return float(earlier.read_text())
    except ValueError:
      return 0.0
  return 0.0


def _carry_time(workdir: pathlib.Path) -> float:
  return _carry_time_primary(workdir) or 0.0


@distributed.primary_only
def note_time(workdir: pathlib.Path, seconds: float) -> None:
  """Notes the compute time the run has taken so far (at a checkpoint), for a resume
  after the run stops before its end."""
  records.write_text(workdir / _EARLIER, f"{seconds!r}\n")


@distributed.primary_only
def finish(workdir: pathlib.Path, summary: dict) -> None:
  """Writes the summary; then forgets the carried time and the replaced run."""
  records.write_summary(workdir, summary)
  (workdir / _EARLIER).unlink(missing_ok=True)
  if (workdir / REPLACED).exists():
    shutil.rmtree(workdir / REPLACED)
