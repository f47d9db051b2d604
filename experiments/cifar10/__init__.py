"""The article's max-norm CNN trained end to end on CIFAR-10, in JAX.

Run it with ``python -m experiments.cifar10 --preset article --workdir W``;
from Python, ``train.train_and_evaluate(configs.get_config("smoke"), workdir)``.

Modules, as in Flax's examples: :mod:`.configs` (the config and presets),
:mod:`.main` (the command) and :mod:`.cli` (its flags, generated from the
config), :mod:`.models`, :mod:`.input_pipeline` (data on the devices),
:mod:`.optimizer`, :mod:`.steps` (the jitted programs) and :mod:`.train`;
where the data comes from: :mod:`.data_sources` (which source),
:mod:`.cifar10_archive` (the canonical archive, fetched and verified) and
:mod:`.array_cache` (decoded arrays, checksummed); what a run measures and
writes: :mod:`.metrics`, :mod:`.checkpoints` (with :mod:`.orbax_errors`),
:mod:`.records` and :mod:`.report` (a finished run's results page); how it
spreads over devices and hosts: :mod:`.sharding` and :mod:`.distributed` (see
TPU_SETUP.md).
"""

# Nothing is imported here: `python -m experiments.cifar10` imports this package
# before its __main__, which must choose the malloc before JAX is loaded.
