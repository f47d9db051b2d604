"""The article's max-norm CNN trained end to end on CIFAR-10, in JAX.

Run it with ``python -m experiments.cifar10 --preset article --workdir W``;
from Python, ``train_and_evaluate(get_config("smoke"), workdir)``.

Modules, as in Flax's examples: :mod:`.configs` (the config and presets),
:mod:`.cli` (the command line, generated from the config), :mod:`.models`,
:mod:`.input_pipeline` (data on the devices), :mod:`.optimizer` and
:mod:`.train`; where the data comes from: :mod:`.data_sources` (which source),
:mod:`.cifar10_archive` (the canonical archive, fetched and verified) and
:mod:`.array_cache` (decoded arrays, checksummed); what a run measures and
writes: :mod:`.metrics`, :mod:`.checkpoints`, :mod:`.records` and
:mod:`.report` (a finished run's results page); how it spreads over devices
and hosts: :mod:`.sharding` and :mod:`.distributed` (see TPU_SETUP.md).
"""

import importlib
from typing import Any

# Where each public name lives. They are imported on first use, so that
# `python -m experiments.cifar10` can choose its malloc (see experiments/allocator.py)
# before JAX is imported.
_EXPORTS = {
    "PRESETS": "configs", "Config": "configs", "ConfigError": "configs",
    "get_config": "configs", "CheckpointError": "checkpoints",
    "DataUnavailableError": "input_pipeline", "WorkdirError": "train",
    "train_and_evaluate": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
