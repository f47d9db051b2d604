"""``python -m experiments.cifar10``: the training command (:mod:`.main`), on tcmalloc.

The package's ``__init__`` imports nothing, so JAX is not loaded yet when
:func:`~experiments.allocator.run_command` chooses the malloc.
"""

from experiments import allocator

if __name__ == "__main__":
  allocator.run_command("experiments.cifar10.main")
