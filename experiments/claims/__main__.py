"""``python -m experiments.claims``: a sweep and its report (:mod:`.cli`), on tcmalloc.

The package's ``__init__`` imports nothing, so JAX is not loaded yet when
:func:`~experiments.allocator.run_command` chooses the malloc.
"""

from experiments import allocator

if __name__ == "__main__":
  allocator.run_command("experiments.claims.cli")
