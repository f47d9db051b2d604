"""One process of the 2-process test in tests/cifar10/test_distributed.py (not a test itself).

    python tests/cifar10/distributed_worker.py \\
        PROCESS_ID NUM_PROCESSES PORT WORKDIR CONFIG_JSON [RESUME_TO_EPOCHS]

Joins a ``jax.distributed`` job on 127.0.0.1:PORT (gloo CPU collectives), then
runs ``train_and_evaluate`` on tfds's mock CIFAR-10, the same fake data the
in-process tests use. With RESUME_TO_EPOCHS it then resumes that run from its
checkpoints (``resume=True``) up to that many epochs, as ``--resume`` does: a
multi-host resume without paying for a second start-up of both processes.
"""

import functools
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # The repository root.

import jax  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from tensorflow_datasets.testing import mocking  # noqa: E402

from experiments.cifar10.configs import get_config  # noqa: E402
from experiments.cifar10.distributed import initialize_distributed  # noqa: E402
from experiments.cifar10.train import train_and_evaluate  # noqa: E402


def main(argv):
  process_id, num_processes, port, workdir, config_json = argv[:5]
  initialize_distributed(f"127.0.0.1:{port}", int(num_processes), int(process_id))
  config = get_config("smoke", **json.loads(config_json))
  runs = [(config, False)]
  if len(argv) > 5:
    runs.append((get_config("smoke", **{**json.loads(config_json), "epochs": int(argv[5])}),
                 True))
  # As in the tests' mock_cifar10 fixture: tfds 4.9.10's mock binds `_getitems` without `self`.
  mocking._getitems = functools.partial(mocking._getitems, None)
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE):
    for run_config, resume in runs:
      summary = train_and_evaluate(run_config, workdir, resume=resume)
      print("SUMMARY " + json.dumps({"process_index": jax.process_index(), **summary}),
            flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
