"""``python -m experiments.claims``: a sweep and its report (:mod:`.cli`), on tcmalloc.

Python imports ``experiments`` and ``experiments.claims`` before this module; both
are docstrings only, so nothing has imported JAX yet and
:func:`~experiments.allocator.reexec_with_tcmalloc` can still re-execute the
process with tcmalloc preloaded. The command itself is imported after that.
"""

import sys

from experiments import allocator

if __name__ == "__main__":
  allocator.reexec_with_tcmalloc()
  from experiments.claims.cli import main

  sys.exit(main())
