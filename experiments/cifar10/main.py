"""The command ``python -m experiments.cifar10 --preset article --workdir W [flags]``.

Flags pick a preset and override single fields of it (see :mod:`.cli`); then
``train_and_evaluate(config, workdir)`` does the work. Bad flags exit with
code 2 (argparse), missing data, an unusable workdir or checkpoint with code 1
and a one-paragraph message. (``__main__.py`` chooses the malloc, then calls
:func:`main`.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments.cifar10 import cli
from experiments.cifar10.checkpoints import CheckpointError
from experiments.cifar10.distributed import DistributedError, initialize_distributed
from experiments.cifar10.input_pipeline import DataUnavailableError
from experiments.cifar10.sharding import ParallelConfigError
from experiments.cifar10.train import WorkdirError, train_and_evaluate

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns the exit code."""
  invocation = cli.parse(argv)
  try:
    if invocation.distributed is not None:
      initialize_distributed(**invocation.distributed)  # Before anything else touches JAX.
    train_and_evaluate(invocation.config, invocation.workdir, resume=invocation.resume,
                       overwrite=invocation.overwrite)
  except (DataUnavailableError, CheckpointError, ParallelConfigError, DistributedError,
          WorkdirError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"\ninterrupted; continue with --resume (workdir {invocation.workdir})",
          file=sys.stderr)
    return 130
  return 0
