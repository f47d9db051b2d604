"""Complete runs' records, kept beside the report so that a sweep outlives its machine.

The runs directory (outside git) holds what a run needs while it trains: its
checkpoints and its records. Once a run is complete, the sweep copies its
records (:data:`FILES`: about 10 KB a run, no checkpoint) to
``experiments/results/<slug>/runs/<budget>/<schedule>/<run name>/``, which is
committed with ``results.md``. On a machine whose runs directory lacks a run
that the archive holds, :func:`restore` copies it back before the sweep plans,
so the run counts as complete and is not trained again, and the report is
rendered from every archived run. A restored run's records are checked like
any other: a damaged one is reported and trained again, never read into a
table.

Copies are whole or absent: each is written to a temporary sibling directory
and renamed into place, so an interrupted copy leaves no half run behind. A
kept run carries the SHA-256 of each of its files (``SHA256SUMS``, in
``sha256sum``'s format); a kept run whose files do not match is not copied
back (:func:`restore` names the file), so the sweep trains it again and keeps
the new one in its place.

The checksums also guard the runs directory, which has none of its own: a
complete run whose records are not byte for byte its intact kept copy
(:func:`mismatch`: a number edited, a byte flipped on disk, the run replaced
by hand) is damaged to the sweep. Which of the two changed cannot be told, so
neither is read into a table: the sweep trains the run again and keeps the
new one.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable

from experiments.cifar10 import records
from experiments.cifar10 import workdir as workdir_policy
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Experiment
from experiments.claims.host import HOST

__all__ = ["FILES", "SUMS", "KeptRunError", "archive_of", "check", "intact", "mismatch",
           "restore", "store", "store_missing"]

# What a complete run leaves besides its checkpoints: enough to render every table.
FILES = (records.CONFIG, records.SUMMARY, records.METRICS, records.STEPS, HOST)
SUMS = "SHA256SUMS"  # Of a kept run's files.


class KeptRunError(ValueError):
  """A kept run's files do not match their checksums; the message names the file."""


def archive_of(results_dir: str | pathlib.Path, experiment: Experiment, budget: Budget
               ) -> pathlib.Path:
  """``<results_dir>/<slug>/runs/<budget>/<schedule>``: where the runs' records are kept."""
  return pathlib.Path(results_dir) / experiment.slug / "runs" / budget.name / experiment.schedule


def _copy_whole(source: pathlib.Path, target: pathlib.Path) -> None:
  """Copies ``source``'s :data:`FILES` to the directory ``target`` (replacing it), through a
  temporary sibling renamed into place."""
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = target.parent / f".{target.name}.{os.getpid()}.staging"
  if staging.exists():  # Left by an earlier process of this pid that was killed.
    shutil.rmtree(staging)
  staging.mkdir()
  try:
    for name in FILES:
      if (source / name).exists():
        shutil.copyfile(source / name, staging / name)
    names = sorted(p.name for p in staging.iterdir())
    (staging / SUMS).write_text("".join(f"{_sha256(staging / n)}  {n}\n" for n in names))
    old = None
    if target.exists():
      old = target.parent / f".{target.name}.old"
      if old.exists():
        shutil.rmtree(old)
      os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
      shutil.rmtree(old)
  finally:
    if staging.exists():
      shutil.rmtree(staging)


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_sums(kept: pathlib.Path) -> dict[str, str]:
  """``SHA256SUMS`` of ``kept`` as {file name: digest}.

  Raises:
    KeptRunError: there are no sums, or a line is not "SHA256  FILE".
  """
  sums = kept / SUMS
  if not sums.is_file():
    raise KeptRunError(f"{sums} is missing")
  listed = {}
  for n, line in enumerate(sums.read_text().splitlines(), 1):
    digest, _, name = line.partition("  ")
    if not digest or not name:
      raise KeptRunError(f"{sums}, line {n}: not 'SHA256  FILE'")
    listed[name] = digest
  return listed


def check(kept: pathlib.Path) -> dict[str, str]:
  """Checks a kept run's files against its ``SHA256SUMS``; returns the sums as
  {file name: digest}.

  Raises:
    KeptRunError: a file is missing, changed, or not listed; or there are no sums.
  """
  listed = _read_sums(kept)
  for path in sorted(kept.iterdir()):
    if path.name != SUMS and path.name not in listed:
      raise KeptRunError(f"{path} is not in {SUMS}")
  for name, digest in listed.items():
    if not (kept / name).is_file():
      raise KeptRunError(f"{kept / name} is missing")
    if _sha256(kept / name) != digest:
      raise KeptRunError(f"{kept / name} does not match its SHA-256 in {SUMS}")
  return listed


def intact(kept: pathlib.Path) -> bool:
  """Whether ``kept`` is a kept run whose files match their checksums."""
  try:
    check(kept)
  except (KeptRunError, OSError):
    return False
  return True


def mismatch(workdir: pathlib.Path, kept: pathlib.Path) -> str | None:
  """What tells the records of the run in ``workdir`` apart from its kept copy ``kept``.

  None when the two hold the same :data:`FILES` byte for byte, or when there is no intact
  kept copy to compare with (a damaged kept copy is replaced by the next store).
  Otherwise one line naming the first file that differs: the run or its copy changed
  after the run was kept, and neither can be told to be the true one.
  """
  try:
    listed = check(kept)
  except (KeptRunError, OSError):
    return None
  present = {name for name in FILES if (workdir / name).is_file()}
  for name in sorted(present | set(listed)):
    if name not in present:
      return f"{workdir / name} is missing; the kept copy in {kept} has it"
    if name not in listed:
      return f"{workdir / name} is not in the kept copy in {kept}"
    if _sha256(workdir / name) != listed[name]:
      return f"{workdir / name} differs from the kept copy in {kept} (SHA-256)"
  return None


def store(workdir: pathlib.Path, archive: pathlib.Path) -> pathlib.Path:
  """Copies the complete run in ``workdir`` to ``archive / workdir.name`` (replacing an
  older copy); returns the copy's directory."""
  target = archive / workdir.name
  _copy_whole(workdir, target)
  return target


def store_missing(workdirs: Iterable[pathlib.Path], archive: pathlib.Path) -> list[str]:
  """:func:`store` for each complete run in ``workdirs`` that ``archive`` does not hold
  yet, or holds only as a damaged copy (one that fails :func:`check`); returns their
  names."""
  stored = []
  for workdir in workdirs:
    if not intact(archive / workdir.name):
      store(workdir, archive)
      stored.append(workdir.name)
  return stored


def restore(workdirs: Iterable[pathlib.Path], archive: pathlib.Path,
            log: Callable[[str], None] = print) -> list[str]:
  """Copies ``archive / w.name`` into each run directory ``w`` of ``workdirs`` that holds
  no run yet (nothing but a lock file) where the archive holds that run; returns the
  names of the runs copied.

  A run directory that holds anything else (a partial run, another config) is left as
  it is: the runs directory is what the sweep trusts. A kept run that fails
  :func:`check` is not copied: one line to ``log`` names the file.
  """
  restored = []
  for target in workdirs:
    source = archive / target.name
    if not source.is_dir():
      continue
    if target.exists() and {p.name for p in target.iterdir()} - {workdir_policy.LOCK}:
      continue
    try:
      check(source)
    except KeptRunError as e:
      log(f"{target.name}: the kept copy is damaged ({e}); not copied, a sweep trains it "
          f"again")
      continue
    if target.exists():
      shutil.rmtree(target)
    _copy_whole(source, target)
    restored.append(target.name)
  return restored
