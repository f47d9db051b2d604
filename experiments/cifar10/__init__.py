"""The article's max-norm CNN trained end to end on CIFAR-10, in JAX.

Run it with ``python -m experiments.cifar10 --preset article --workdir W``;
from Python, ``train_and_evaluate(get_config("smoke"), workdir)``.

Modules, as in Flax's examples: :mod:`.configs` (presets), :mod:`.models`,
:mod:`.input_pipeline`, :mod:`.optimizer`, :mod:`.train`, plus
:mod:`.metrics`, :mod:`.checkpoints` and :mod:`.records` for what a run
measures and writes, and :mod:`.parallel` for data parallelism over every
device of every host (see TPU_SETUP.md).
"""

from experiments.cifar10.checkpoints import CheckpointError
from experiments.cifar10.configs import PRESETS, Config, get_config
from experiments.cifar10.input_pipeline import DataUnavailableError
from experiments.cifar10.train import train_and_evaluate

__all__ = [
    "PRESETS", "CheckpointError", "Config", "DataUnavailableError", "get_config",
    "train_and_evaluate",
]
