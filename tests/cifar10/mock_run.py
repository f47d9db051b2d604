"""A run on tfds's mock CIFAR-10, in its own process (not a test itself).

    python tests/cifar10/mock_run.py WORKDIR CONFIG_JSON [--resume]
    python tests/cifar10/mock_run.py cli [FLAGS ...]   # python -m experiments.cifar10 FLAGS

Used by tests that kill a run (tests/cifar10/test_crash_resume.py) or run the
command line on fake data. The mock data is the same fake data the in-process
tests use (the ``mock_cifar10`` fixture). With ``$MOCK_RUN_KILL_BEFORE_CHECKSUMS``
set to an epoch, the process kills itself with SIGKILL once Orbax has committed
that epoch's checkpoint, before its checksums are written. With
``$MOCK_RUN_FILE_SIZE_LIMIT`` set to a number of bytes, writing a file beyond
that size fails (``RLIMIT_FSIZE``: EFBIG, as a full disk fails with ENOSPC).
"""

import functools
import json
import os
import pathlib
import resource
import signal
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # The repository root.

import tensorflow_datasets as tfds  # noqa: E402
from tensorflow_datasets.testing import mocking  # noqa: E402

from experiments.cifar10 import checkpoints  # noqa: E402
from experiments.cifar10.configs import get_config  # noqa: E402
from experiments.cifar10.main import main as cli_main  # noqa: E402
from experiments.cifar10.train import train_and_evaluate  # noqa: E402


def _kill_before_checksums(epoch: int) -> None:
  write_checksums = checkpoints.Checkpoints._write_checksums

  def killing(self, saved_epoch):
    if saved_epoch == epoch:
      os.kill(os.getpid(), signal.SIGKILL)
    return write_checksums(self, saved_epoch)
  checkpoints.Checkpoints._write_checksums = killing


def main(argv):
  if os.environ.get("MOCK_RUN_FILE_SIZE_LIMIT"):
    limit = int(os.environ["MOCK_RUN_FILE_SIZE_LIMIT"])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # The write fails instead of killing.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  if os.environ.get("MOCK_RUN_KILL_BEFORE_CHECKSUMS"):
    _kill_before_checksums(int(os.environ["MOCK_RUN_KILL_BEFORE_CHECKSUMS"]))
  # As in the tests' mock_cifar10 fixture: tfds 4.9.10's mock binds `_getitems` without `self`.
  mocking._getitems = functools.partial(mocking._getitems, None)
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE):
    if argv[0] == "cli":
      return cli_main(argv[1:])
    workdir, config_json = argv[:2]
    config = get_config("smoke", **json.loads(config_json))
    train_and_evaluate(config, workdir, resume="--resume" in argv[2:])
    return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
