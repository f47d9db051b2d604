"""Is the constraint itself slower than in a previous version? One kernel at a time, A/B.

Loads ``maxnorm_jax`` as it was at a git revision (``HEAD`` by default: the
last commit, before the working tree's changes) under another module name,
next to the working tree's ``maxnorm_jax``, and times the same jitted call of
both on the same kernels, in interleaved rounds (the order alternates), in
one process. The report gives, per kernel, the median time of each and the
median and spread (min..max) of the per-round ratio new/old, in wall-clock and
in this process's CPU time, and how far apart the new params (``params +
updates``) of the two are, in units of float32 spacing (ulps).

The kernels are float32, with half of the neurons over the bound after the
update, so the projection does its full work: the article's Dense(1024)
kernel ``(86528, 1024)``, a Conv(128, 3x3) kernel and the Dense(10) kernel.
The ``slow path`` row times the working tree alone on the largest kernel with
one weight of 1e20 (its squares overflow, so its neuron needs the rescaled sums)
against the same kernel without it.

    python -m benchmarks.constraint_versions                # HEAD vs working tree
    python -m benchmarks.constraint_versions --rev 4ff06ae --rounds 15
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

import maxnorm_jax
from experiments.machine import cpu_model
from experiments.markdown import spread

SHAPES = {"Dense(1024) (86528, 1024)": (86528, 1024),
          "Conv(128) (3, 3, 128, 128)": (3, 3, 128, 128),
          "Dense(10) (1024, 10)": (1024, 10)}


def load_revision(rev: str, into: pathlib.Path) -> ModuleType:
  """``maxnorm_jax`` as of git ``rev``, imported as ``maxnorm_jax_<rev>``."""
  root = pathlib.Path(maxnorm_jax.__file__).resolve().parents[1]
  git = lambda *args: subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                                     text=True).stdout
  sha = git("rev-parse", "--short", rev).strip()
  alias = f"maxnorm_jax_{sha}"
  for path in git("ls-tree", "-r", "--name-only", rev, "maxnorm_jax").split():
    target = into / alias / pathlib.Path(path).relative_to("maxnorm_jax")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(git("show", f"{rev}:{path}").replace("maxnorm_jax", alias))
  sys.path.insert(0, str(into))
  return importlib.import_module(alias)


def problem(shape: tuple[int, ...], c: float, seed: int = 0) -> tuple[jax.Array, jax.Array]:
  """Params and updates whose sum has half of its neurons (alternately) over ``c``."""
  rng = np.random.default_rng(seed)
  fan_in = int(np.prod(shape[:-1]))
  params = rng.standard_normal(shape, np.float32) * np.float32(c / np.sqrt(fan_in))
  params[..., ::2] *= 2  # these neurons start at norm ~2c
  updates = rng.standard_normal(shape, np.float32) * np.float32(0.01 * c / np.sqrt(fan_in))
  return jnp.asarray(params), jnp.asarray(updates)


def update_fn(lib: ModuleType, params: jax.Array, c: float) -> Callable:
  tx = lib.max_norm(c)
  state = tx.init({"k": params})
  return jax.jit(lambda p, u: tx.update({"k": u}, state, {"k": p})[0]["k"])


def interleaved(fns: dict[str, Callable], args: tuple, rounds: int, calls: int
                ) -> dict[str, dict[str, list[float]]]:
  """Seconds per call of each function, wall-clock and this process's CPU time, one
  figure per round, the order alternating. (CPU time is less sensitive to other
  processes on a shared machine; wall-clock is what a user waits.)"""
  for fn in fns.values():
    jax.block_until_ready(fn(*args))  # compile and warm up
  start = time.perf_counter()
  jax.block_until_ready(next(iter(fns.values()))(*args))
  # Small kernels: enough calls per round for a round to last ~50 ms.
  calls = max(calls, int(0.05 / max(time.perf_counter() - start, 1e-6)))
  times: dict[str, dict[str, list[float]]] = {
      name: {"wall": [], "cpu": []} for name in fns}
  for r in range(rounds):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      wall, cpu = time.perf_counter(), time.process_time()
      for _ in range(calls):
        jax.block_until_ready(fns[name](*args))
      times[name]["wall"].append((time.perf_counter() - wall) / calls)
      times[name]["cpu"].append((time.process_time() - cpu) / calls)
  return times


def row(label: str, a: dict[str, list[float]], b: dict[str, list[float]], extra: str) -> str:
  cells = []
  for clock in ("wall", "cpu"):
    ratios = [y / x for x, y in zip(a[clock], b[clock])]
    cells.append(spread(ratios, ".3f"))
  return (f"| {label} | {1e3 * statistics.median(a['wall']):.2f} | "
          f"{1e3 * statistics.median(b['wall']):.2f} | {cells[0]} | {cells[1]} | {extra} |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rev", default="HEAD", help="the git revision to compare against")
  parser.add_argument("--rounds", type=int, default=21, help="interleaved A/B rounds")
  parser.add_argument("--calls", type=int, default=3,
                      help="calls per version per round (at least ~50 ms' worth)")
  parser.add_argument("--c", type=float, default=3.0, help="the max_norm bound")
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.calls < 1:
    parser.error("--rounds and --calls must be positive")
  with tempfile.TemporaryDirectory() as tmp:
    old = load_revision(args.rev, pathlib.Path(tmp))
    print(f"# max_norm update, {old.__name__} (old) vs working tree (new) | "
          f"{datetime.date.today()} | jax {jax.__version__} | {cpu_model()} "
          f"x{jax.device_count()} {jax.devices()[0].platform} | rounds={args.rounds} "
          f"calls={args.calls} c={args.c}")
    print("| kernel (float32) | old ms (wall, median) | new ms | ratio new/old, wall: median "
          "(min..max) | ratio new/old, CPU time | new params differ by (ulps) |")
    print("|---|---|---|---|---|---|")
    for label, shape in SHAPES.items():
      params, updates = problem(shape, args.c)
      fns = {"old": update_fn(old, params, args.c), "new": update_fn(maxnorm_jax, params, args.c)}
      a, b = (np.asarray(params + fns[v](params, updates)) for v in ("old", "new"))
      ulps = float(np.max(np.abs(a - b) / np.spacing(np.abs(a))))
      times = interleaved(fns, (params, updates), args.rounds, args.calls)
      print(row(label, times["old"], times["new"], f"{ulps:.0f}"), flush=True)
      del fns, times, a, b
    label, shape = next(iter(SHAPES.items()))
    params, updates = problem(shape, args.c)
    fast = update_fn(maxnorm_jax, params, args.c)
    huge = updates.at[(0,) * len(shape)].set(1e20)
    times = interleaved({"fast": lambda p: fast(p, updates), "slow": lambda p: fast(p, huge)},
                        (params,), args.rounds, args.calls)
    print(row(f"slow path: {label} with one 1e20 weight (new only; columns: fast, slow)",
              times["fast"], times["slow"], "n/a"), flush=True)


if __name__ == "__main__":
  main()
