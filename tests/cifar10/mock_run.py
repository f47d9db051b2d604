"""One training run on tfds's mock CIFAR-10, in its own process (not a test itself).

    python tests/cifar10/mock_run.py WORKDIR CONFIG_JSON [--resume]

Used by tests/cifar10/test_crash_resume.py, which kills it with SIGKILL at random
moments and resumes it. The mock data is the same fake data the in-process tests
use (the ``mock_cifar10`` fixture).
"""

import functools
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # The repository root.

import tensorflow_datasets as tfds  # noqa: E402
from tensorflow_datasets.testing import mocking  # noqa: E402

from experiments.cifar10.configs import get_config  # noqa: E402
from experiments.cifar10.train import train_and_evaluate  # noqa: E402


def main(argv):
  workdir, config_json = argv[:2]
  config = get_config("smoke", **json.loads(config_json))
  # As in the tests' mock_cifar10 fixture: tfds 4.9.10's mock binds `_getitems` without `self`.
  mocking._getitems = functools.partial(mocking._getitems, None)
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE):
    train_and_evaluate(config, workdir, resume="--resume" in argv[2:])


if __name__ == "__main__":
  main(sys.argv[1:])
