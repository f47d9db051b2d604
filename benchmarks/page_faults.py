"""Page faults of the train step under each malloc, and max_norm's overhead under each.

XLA:CPU allocates each execution's temporaries (about 1.7 GB for the article's
step at batch 128, see ``step_memory``) in one ``posix_memalign`` call and
frees them when the execution is done. glibc serves a block that large with a
fresh ``mmap`` and gives it back with ``munmap``, so every step faults its
4 KiB pages in again (zeroed by the kernel): about 437,000 minor faults per
step. An allocator that keeps freed memory mapped removes them.

Each malloc setting runs in its own worker process, since the allocator is
chosen before a process starts (``LD_PRELOAD``, ``GLIBC_TUNABLES``). A worker
builds two train steps of the article's CNN (convolutions as
``benchmarks.constraint_overhead`` builds them, the CPU default): Adam alone,
and Adam + ``max_norm(3)`` on the Dense(1024) kernel. Rounds interleave the
workers and the two steps (their order alternates from round to round). For
every timed run the worker reports wall time, minor page faults
(``getrusage`` ``ru_minflt``, which does not depend on machine noise), and
CPU time, user + system (steadier than wall time when other processes share
the cores) and system alone. The report gives, per setting and step, medians
and the per-round ratio of img/s to the first setting; then max_norm's
overhead (Adam + max_norm over Adam, per round) under each setting, in wall
time and in CPU time. A worker holds both steps, so its peak RSS includes
what the allocator keeps for each.

Settings (``--malloc``):
  default       the environment as it is: glibc's malloc, unless the caller set something
  huge          glibc, its blocks on transparent huge pages (glibc.malloc.hugetlb=1)
  glibc-retain  glibc, one arena, never mmap, never trim (arena_max=1, mmap_max=0,
                trim_threshold=2**40): freed blocks stay in the heap
  tcmalloc      LD_PRELOAD gperftools' libtcmalloc_minimal.so.4, TCMALLOC_RELEASE_RATE=0
                (Debian: libtcmalloc-minimal4)
  jemalloc      LD_PRELOAD libjemalloc.so.2, no purging and no separate arena for
                big blocks (Debian: libjemalloc2)

    python -m benchmarks.page_faults --batch-size 128 --rounds 6 --malloc default tcmalloc
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.workers import Worker, rounds_parser
from experiments.machine import cpu_model
from experiments.markdown import spread

MALLOC: dict[str, dict[str, str]] = {
    "default": {},
    "huge": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "glibc-retain": {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                                       f"glibc.malloc.trim_threshold={2 ** 40}"},
    "tcmalloc": {"LD_PRELOAD": "libtcmalloc_minimal.so.4", "TCMALLOC_RELEASE_RATE": "0"},
    "jemalloc": {"LD_PRELOAD": "libjemalloc.so.2",
                 "MALLOC_CONF": "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"},
}
STEPS = ("adam", "adam+max_norm")
LABELS = {"adam": "Adam", "adam+max_norm": "Adam + max_norm"}


def malloc_env(setting: str, base: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of a worker that runs under malloc ``setting``."""
  return {**(os.environ if base is None else base), **MALLOC[setting]}


def preloaded_missing(env: dict[str, str], maps: str) -> list[str]:
  """The ``LD_PRELOAD`` libraries of ``env`` that ``maps`` (``/proc/self/maps``) lacks.

  ld.so only warns when it cannot preload a library, and the process then runs
  on glibc's malloc; a worker checks this so that a setting cannot silently
  measure the default.
  """
  mapped = {os.path.basename(line.split()[-1]) for line in maps.splitlines()
            if len(line.split()) >= 6}

  def loaded(lib: str) -> bool:  # libfoo.so.4 is mapped as the file it links to, libfoo.so.4.5
    name = os.path.basename(lib)
    return any(m == name or m.startswith(name + ".") for m in mapped)
  return [lib for lib in env.get("LD_PRELOAD", "").replace(":", " ").split() if not loaded(lib)]


def step_closures(batch: int) -> dict[str, Callable[[], None]]:
  """One closure per step in ``STEPS``: runs one train step and blocks until it is done."""
  # Imported in the worker that needs it, after its malloc was chosen.
  from benchmarks.article_step import article_optimizer, step_runner  # noqa: PLC0415

  return {"adam": step_runner(article_optimizer(False), batch),
          "adam+max_norm": step_runner(article_optimizer(True), batch)}


def worker(batch: int, warmup: int) -> None:
  """Builds both steps, says ``ready``, then answers ``STEP N`` with one JSON line."""
  with open("/proc/self/maps") as f:
    missing = preloaded_missing(dict(os.environ), f.read())
  if missing:
    sys.exit(f"LD_PRELOAD did not load {missing}: install it, or pick another --malloc")
  runs = step_closures(batch)
  for run in runs.values():
    for _ in range(warmup):  # compile, then let the allocator reach its steady state
      run()
  print("ready", flush=True)
  for line in sys.stdin:
    name, steps = line.split()[0], int(line.split()[1])
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
      runs[name]()
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": (t1 - t0) / steps,
                      "faults": (r1.ru_minflt - r0.ru_minflt) / steps,
                      "sys": (r1.ru_stime - r0.ru_stime) / steps,
                      "cpu": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / steps,
                      "peak_rss_mib": r1.ru_maxrss / 1024}), flush=True)  # KiB on Linux


def start_worker(setting: str, batch: int, warmup: int) -> Worker:
  """One malloc setting's process; ``request("STEP N")`` answers a JSON dict."""
  return Worker(f"malloc setting {setting}",
                [sys.executable, "-m", "benchmarks.page_faults", "--worker", setting,
                 "--batch-size", str(batch), "--warmup", str(warmup)], env=malloc_env(setting))


def report(runs: dict[str, dict[str, list[dict[str, float]]]], batch: int) -> list[str]:
  """The two tables, from ``runs[setting][step]``: one record per round."""
  first = next(iter(runs))
  lines = [
      f"| malloc | step | s/step (median) | img/s | img/s ratio to {first} (median, min..max) "
      "| minor faults/step (median, min..max) | CPU s/step, user + system (median) "
      "| system CPU s/step (median) | peak RSS MiB |",
      "|---|---|---|---|---|---|---|---|---|"]
  for step in reversed(STEPS):
    for setting, by_step in runs.items():
      rec = by_step[step]
      seconds = [r["seconds"] for r in rec]
      ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs[first][step], rec)]
      med = statistics.median(seconds)
      lines.append(
          f"| {setting} | {LABELS[step]} | {med:.2f} | {batch / med:.1f} | "
          f"{spread(ratios, '.2f')} | {spread([r['faults'] for r in rec], ',.0f')} | "
          f"{statistics.median(r['cpu'] for r in rec):.2f} | "
          f"{statistics.median(r['sys'] for r in rec):.2f} | "
          f"{max(r['peak_rss_mib'] for r in rec):,.0f} |")
  lines += ["", "| malloc | max_norm overhead in wall time: Adam + max_norm over Adam, per "
            "round (median, min..max) | the same in CPU time (user + system) |", "|---|---|---|"]
  for setting, by_step in runs.items():
    overhead = {key: [100 * (b[key] / a[key] - 1)
                      for a, b in zip(by_step["adam"], by_step["adam+max_norm"])]
                for key in ("seconds", "cpu")}
    lines.append(f"| {setting} | {spread(overhead['seconds'], '+.1f', '%')} | "
                 f"{spread(overhead['cpu'], '+.1f', '%')} |")
  return lines


def main(argv=None) -> None:
  parser = rounds_parser(__doc__, rounds=6, steps=1, steps_help="steps per step kind per round")
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed steps of each kind per worker, compilation included")
  parser.add_argument("--malloc", nargs="+", choices=sorted(MALLOC),
                      default=["default", "tcmalloc"],
                      help="malloc settings, one worker each; ratios are to the first")
  parser.add_argument("--worker", choices=sorted(MALLOC), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if min(args.batch_size, args.rounds, args.steps, args.warmup) < 1:
    parser.error("--batch-size, --rounds, --steps and --warmup must be positive")
  if args.worker:
    worker(args.batch_size, args.warmup)
    return

  workers: dict[str, Worker] = {}
  runs: dict[str, dict[str, list[dict[str, float]]]] = {}
  try:
    for setting in args.malloc:  # one at a time: each compiles and warms up alone
      workers[setting] = start_worker(setting, args.batch_size, args.warmup)
      runs[setting] = {step: [] for step in STEPS}
    for i in range(args.rounds):
      for setting, w in workers.items():
        for step in (STEPS if i % 2 == 0 else reversed(STEPS)):
          runs[setting][step].append(json.loads(w.request(f"{step} {args.steps}")))
  finally:
    for w in workers.values():
      w.close()

  import jax  # noqa: PLC0415
  print(f"# page faults and malloc | {datetime.date.today()} | jax {jax.__version__} | "
        f"{cpu_model()}, {os.cpu_count()} CPUs | batch {args.batch_size} | {args.rounds} "
        f"rounds x {args.steps} steps of each, interleaved, after {args.warmup} warm-up steps; "
        "one process per malloc setting")
  print("\n".join(report(runs, args.batch_size)))


if __name__ == "__main__":
  main()
