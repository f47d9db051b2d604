"""Per-epoch Orbax checkpoints that refuse to resume the wrong run or a damaged one.

Each checkpoint (``<workdir>/checkpoints/<epoch>/``) holds the train state and
the config that produced it. Resuming compares that config with the current
one first; a mismatched or unreadable checkpoint raises
:class:`CheckpointError` and nothing on disk is touched.

Orbax does not check what it reads: a checkpoint whose bytes were flipped on
disk restores as garbage without complaint. So once Orbax has committed a
checkpoint, the primary process writes ``sha256.json`` into it, the SHA-256 of
every file of the checkpoint, and every resume first checks each file against
it. File-level hashes cover the arrays, Orbax's metadata and the config
alike, do not depend on how arrays are sharded over devices or hosts, and
cost one read of the files per save and per resume (about 1 s for the
article's 1 GB checkpoint). The save therefore waits for Orbax to finish,
which costs a few seconds per epoch.

Before its first save, a workdir gets a marker file, ``CHECKSUMMED``. In a
workdir with the marker, a committed checkpoint without ``sha256.json`` is a
save that did not finish (the process died between Orbax's commit and the
checksums): :func:`set_aside_unfinished` moves it to
``<workdir>/unverified_checkpoints/`` (nothing is deleted), and the run
resumes from the newest checkpoint before it. A checkpoint written before
checksums existed (no marker) is restored with a warning that it could not be
verified. Checksums that exist and fail are an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import sys
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

from experiments.cifar10 import configs, distributed
from experiments.cifar10.orbax_errors import (
  ignore_late_callbacks,
  ignore_unretrieved_writes,
  orbax_errors_unlogged,
  short_error,
  write_failure,
)

__all__ = ["CHECKSUMS", "CheckpointError", "Checkpoints", "set_aside_unfinished"]

CHECKSUMS = "sha256.json"  # In each checkpoint: {relative file path: sha256 hex digest}.
_MARKER = "CHECKSUMMED"  # In the checkpoints directory: every checkpoint gets CHECKSUMS.
UNVERIFIED = "unverified_checkpoints"  # Beside the checkpoints directory: unfinished saves.
_CHUNK = 1 << 22


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message says why and what to do."""


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _files(step_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Every file of a checkpoint but its checksum list, by path relative to it."""
  return {p.relative_to(step_dir).as_posix(): p for p in sorted(step_dir.rglob("*"))
          if p.is_file() and p.name != CHECKSUMS}


class Checkpoints:
  """The checkpoints of one workdir.

  Args:
    directory: where the checkpoints live.
    max_to_keep: older checkpoints beyond this many are deleted after a save.
    create: create ``directory`` if it is missing (False: it must exist).
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2,
               create: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    self._verified: set[int] = set()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, cleanup_tmp_directories=False),
    )

  def latest_epoch(self) -> int | None:
    """The last saved epoch, or None when there is no checkpoint."""
    return self._manager.latest_step()

  def _step_dir(self, epoch: int) -> pathlib.Path:
    return self.directory / str(epoch)

  def save(self, epoch: int, state: Any, config: configs.Config) -> None:
    """Saves ``state`` as the checkpoint of ``epoch``, then its checksums.

    Returns once the checkpoint is committed and checksummed, so a crash at
    any point leaves either the previous checkpoints only, or a verifiable one,
    or a committed one without checksums, which a resume sets aside
    (:func:`set_aside_unfinished`).
    """
    ignore_late_callbacks()
    try:
      with orbax_errors_unlogged():
        self._mark()
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config.to_json()),
        ))
        self._manager.wait_until_finished()
        self._write_checksums(epoch)
    except Exception as e:  # Orbax raises many kinds for a failed write (ENOSPC, EFBIG, ...).
      ignore_unretrieved_writes(self.directory)
      raise CheckpointError(
          f"The checkpoint of epoch {epoch} could not be saved in {self.directory} "
          f"({write_failure(e)}). The checkpoints before it are kept: free some space, then "
          f"continue with --resume.") from e

  @distributed.primary_only
  def _mark(self) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    (self.directory / _MARKER).touch()

  @distributed.primary_only
  def _write_checksums(self, epoch: int) -> None:
    step_dir = self._step_dir(epoch)
    sums = {name: _sha256(path) for name, path in _files(step_dir).items()}
    fd, tmp = tempfile.mkstemp(dir=step_dir, prefix=f".{CHECKSUMS}.")
    mask = os.umask(0o022)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # mkstemp's is 0600; Orbax's files follow the umask.
    with os.fdopen(fd, "w") as f:
      json.dump(sums, f, indent=1, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, step_dir / CHECKSUMS)  # Atomic: the list is whole or absent.

  def verify(self, epoch: int) -> None:
    """Checks every file of checkpoint ``epoch`` against its ``sha256.json``.

    Raises:
      CheckpointError: a file is missing, extra, truncated or changed, or the
        list itself is missing (in a checksummed workdir) or damaged.
    """
    if epoch in self._verified:
      return
    step_dir = self._step_dir(epoch)
    listing = step_dir / CHECKSUMS
    if not listing.exists():
      if (self.directory / _MARKER).exists():
        raise self._damaged(epoch, f"its {CHECKSUMS} is missing (set unfinished saves aside "
                                   f"with set_aside_unfinished first)")
      print(f"warning: the checkpoint of epoch {epoch} has no {CHECKSUMS} (it was written "
            f"before checkpoints were checksummed), so it is restored unverified.",
            file=sys.stderr, flush=True)
      self._verified.add(epoch)  # Say it once.
      return
    try:
      expected = json.loads(listing.read_text())
      if not isinstance(expected, dict) or not all(
          isinstance(k, str) and isinstance(v, str) for k, v in expected.items()):
        raise ValueError("not a {file: sha256} object")
    except (ValueError, UnicodeDecodeError) as e:
      raise self._damaged(epoch, f"its {CHECKSUMS} is unreadable ({short_error(e)})") from e
    found = _files(step_dir)
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected)
    if missing or extra:
      raise self._damaged(epoch, f"files missing: {missing or 'none'}; files not in "
                                 f"{CHECKSUMS}: {extra or 'none'}")
    for name, path in found.items():
      if _sha256(path) != expected[name]:
        raise self._damaged(epoch, f"the checksum of {name} does not match")
    self._verified.add(epoch)

  def _damaged(self, epoch: int, why: str) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint of epoch {epoch} in {self._step_dir(epoch)} is corrupt: {why}. "
        f"Nothing was restored and nothing was deleted: move that directory away to resume "
        f"from an earlier checkpoint, or use a new --workdir.")

  def _unreadable(self, epoch: int, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint of epoch {epoch} in {self._step_dir(epoch)} could not be "
        f"read ({short_error(error)}). It may be corrupt or incomplete. "
        f"Nothing was deleted: move that directory away to resume from an earlier "
        f"checkpoint, or use a new --workdir."
    )

  def check_config(self, epoch: int, config: configs.Config) -> None:
    """Verifies checkpoint ``epoch``, then raises CheckpointError unless it was made
    by ``config``."""
    self.verify(epoch)
    try:
      saved = self._manager.restore(
          epoch, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # Orbax raises many kinds for damaged files.
      raise self._unreadable(epoch, e) from e
    ours, theirs = configs.identity_fields(config), configs.identity_fields(saved)
    diff = {k: (theirs.get(k), ours.get(k)) for k in ours.keys() | theirs.keys()
            if theirs.get(k) != ours.get(k)}
    if diff:
      details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}"
                          for k, (a, b) in sorted(diff.items()))
      raise CheckpointError(
          f"The checkpoint in {self.directory} was made with a different config ({details}). "
          f"Resume with the same settings, or use a new --workdir. Nothing was deleted."
      )

  def restore(self, epoch: int, target: Any) -> Any:
    """Verifies checkpoint ``epoch`` and restores it into the structure, shapes, dtypes
    and shardings of ``target``."""
    self.verify(epoch)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self._manager.restore(
          epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as e:  # Orbax raises many kinds for damaged files.
      raise self._unreadable(epoch, e) from e

  def close(self) -> None:
    """Waits for pending saves, then releases the manager. A failed save has been
    reported by :meth:`save` already, so it is not raised again here."""
    with contextlib.suppress(Exception):
      self._manager.wait_until_finished()
    self._manager.close()


@distributed.primary_only
def set_aside_unfinished(directory: str | pathlib.Path) -> list[pathlib.Path]:
  """Moves the checkpoints in ``directory`` whose save did not finish (committed by Orbax,
  but without their checksums, in a checksummed workdir) to ``unverified_checkpoints/``
  beside it, and says so in one line each; returns where they went. Deletes nothing."""
  directory = pathlib.Path(directory)
  if not (directory / _MARKER).exists():
    return []
  moved = []
  for step_dir in sorted(directory.iterdir(), key=lambda p: p.name):
    if not (step_dir.name.isdigit() and step_dir.is_dir()) or (step_dir / CHECKSUMS).exists():
      continue
    aside = directory.parent / UNVERIFIED / step_dir.name
    n = 1
    while aside.exists():
      aside, n = directory.parent / UNVERIFIED / f"{step_dir.name}.{n}", n + 1
    aside.parent.mkdir(exist_ok=True)
    os.replace(step_dir, aside)
    print(f"The checkpoint of epoch {step_dir.name} has no {CHECKSUMS}: its save did not "
          f"finish. It was moved, unverified, to {aside}; resuming from the checkpoint "
          f"before it.", file=sys.stderr, flush=True)
    moved.append(aside)
  return moved
