"""Run the training commands on tcmalloc, which keeps XLA:CPU's step memory mapped.

On CPU, every execution of the article's train step allocates one ~1.7 GB
temporary buffer (``posix_memalign`` from an XLA worker thread). glibc serves
a block that size with a fresh ``mmap`` and returns it with ``munmap`` when
the step ends, so the next step faults in ~437,000 zeroed pages again: about
0.7 s of system time per step, 16-19% of the step's CPU time
(``python -m benchmarks.page_faults``). No glibc tunable keeps a block that
size without other costs, and XLA has no allocator option; gperftools'
tcmalloc with ``TCMALLOC_RELEASE_RATE=0`` keeps freed memory, so the faults go
to zero, at the price of ~1.9 GB more resident memory.

The allocator must be chosen before the process starts, so
:func:`reexec_with_tcmalloc` re-executes the command once with tcmalloc
preloaded (same PID, arguments and open files); a package's ``__main__.py``
calls :func:`run_command`, which does that and then imports and runs the
command. It does nothing when tcmalloc
is already loaded, off Linux, when ``MAXNORM_MALLOC=system`` is set, or when
the library is not installed (it then prints one line on how to install it:
``apt-get install libtcmalloc-minimal4``). This module imports nothing heavy,
so it can run before JAX is imported.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import sys
from typing import NoReturn

__all__ = ["ENV_OPT_OUT", "active_allocator", "reexec_with_tcmalloc", "run_command"]

ENV_OPT_OUT = "MAXNORM_MALLOC"  # "system": keep glibc's malloc.
_MARKER = "MAXNORM_MALLOC_REEXEC"  # Set in the re-executed process: never loop.
_LIBRARY = "tcmalloc_minimal"


def active_allocator() -> str:
  """``"tcmalloc"`` if a tcmalloc is mapped into this process, else ``"system"``."""
  try:
    with open("/proc/self/maps") as maps:
      return "tcmalloc" if "libtcmalloc" in maps.read() else "system"
  except OSError:
    return "system"


def _library_path() -> str | None:
  name = ctypes.util.find_library(_LIBRARY)
  if name is None:
    return None
  if os.path.isabs(name):
    return name
  for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib",
                    "/usr/local/lib", "/lib/x86_64-linux-gnu"):
    candidate = os.path.join(directory, name)
    if os.path.exists(candidate):
      return candidate
  return name  # The dynamic loader finds sonames on its own search path.


def reexec_with_tcmalloc() -> None:
  """Re-executes this Python command with tcmalloc preloaded, or returns.

  Call it first thing in a ``__main__`` module, before JAX is imported.
  """
  if (sys.platform != "linux" or os.environ.get(ENV_OPT_OUT) == "system"
      or os.environ.get(_MARKER) or active_allocator() == "tcmalloc"):
    return
  library = _library_path()
  if library is None:
    print(f"note: tcmalloc not found, so XLA:CPU's step memory is re-mapped every step "
          f"(CPU training ~20% slower); install it with `apt-get install "
          f"libtcmalloc-minimal4`, or set {ENV_OPT_OUT}=system to silence this.",
          file=sys.stderr, flush=True)
    return
  env = dict(os.environ)
  env[_MARKER] = "1"
  env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD")]))
  env.setdefault("TCMALLOC_RELEASE_RATE", "0")  # Never hand freed pages back to the kernel.
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def run_command(module: str) -> NoReturn:
  """Re-executes on tcmalloc (:func:`reexec_with_tcmalloc`), then imports ``module`` and
  exits with the code its ``main()`` returns.

  For a package's ``__main__.py``: Python has imported only the packages above
  it, so JAX is not loaded before the malloc is chosen.
  """
  reexec_with_tcmalloc()
  sys.exit(importlib.import_module(module).main())
