"""Per-epoch Orbax checkpoints that refuse to resume the wrong run.

Each checkpoint (``<workdir>/checkpoints/<epoch>/``) holds the train state and
the config that produced it. Resuming compares that config with the current
one first; a mismatched or unreadable checkpoint raises
:class:`CheckpointError` and nothing on disk is touched.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from experiments.cifar10 import configs

__all__ = ["CheckpointError", "Checkpoints"]


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message says why and what to do."""


class Checkpoints:
  """The checkpoints of one workdir.

  Args:
    directory: where the checkpoints live (created if missing).
    max_to_keep: older checkpoints beyond this many are deleted after a save.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=False),
    )

  def latest_epoch(self) -> int | None:
    """The last saved epoch, or None when there is no checkpoint."""
    return self._manager.latest_step()

  def save(self, epoch: int, state: Any, config: configs.Config) -> None:
    """Saves ``state`` (asynchronously) as the checkpoint of ``epoch``."""
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config.to_json()),
    ))

  def _unreadable(self, epoch: int, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint of epoch {epoch} in {self.directory / str(epoch)} could not be "
        f"read ({type(error).__name__}: {error}). It may be corrupt or incomplete. "
        f"Nothing was deleted: move that directory away to resume from an earlier "
        f"checkpoint, or use a new --workdir."
    )

  def check_config(self, epoch: int, config: configs.Config) -> None:
    """Raises CheckpointError unless checkpoint ``epoch`` was made by ``config``."""
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
    """Restores checkpoint ``epoch`` into the structure, shapes and dtypes of ``target``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self._manager.restore(
          epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as e:  # Orbax raises many kinds for damaged files.
      raise self._unreadable(epoch, e) from e

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
