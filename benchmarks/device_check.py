"""One prepared command for a GPU (or TPU) machine: what the article's recipe costs there.

    python -m benchmarks.device_check            # one H100: about 5 minutes
    python -m benchmarks.device_check --quick    # any CPU: a tiny network, a few seconds

It prints, for the article's network at batch 128 on the first device:

1. train-step throughput (img/s, and model FLOP utilisation where the device's peak
   is known) in float32 and in bfloat16 compute;
2. max_norm's overhead: Adam alone against Adam + max_norm(3) on the Dense(1024)
   kernel, timed in interleaved rounds, with the per-round ratio's median and spread;
3. the PyTorch peer (eager, Adam, then ``torch.renorm`` on the Dense(1024)
   weight) on the same device, if torch is installed;
4. the article's whole recipe end to end, ``train_and_evaluate`` with 10 epochs
   of 45,000 training images and validation and test sets of CIFAR-10's sizes,
   on synthetic uint8 data already on the device: compile time, the 10 epochs'
   training and validation time, and the total with checkpoints.

It needs JAX, flax, optax, orbax-checkpoint, tqdm and this repository; torch is
optional; no tensorflow-datasets, Keras or network. Every step time is measured
after a warm-up step, blocking on the result, as the median of several rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from benchmarks.article_step import article_optimizer, step_runner
from experiments.cifar10 import input_pipeline, sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import train_and_evaluate
from experiments.markdown import row

__all__ = ["main"]

# Dense bf16 / tf32 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data
# sheets, for the utilisation column; other devices get none.
_PEAK_TFLOPS = {"H100": {"bfloat16": 989.0, "float32": 494.0},
                "H200": {"bfloat16": 989.0, "float32": 494.0}}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """How big a check is: the network, the batch, and how much to time."""
  conv_features: int
  dense_features: int
  batch_size: int
  steps: int  # Steps per timed round.
  rounds: int
  train: int  # End to end: examples per split, and epochs.
  val: int
  test: int
  epochs: int


FULL = Sizes(128, 1024, 128, steps=50, rounds=5, train=45_000, val=5_000, test=10_000,
             epochs=10)
QUICK = Sizes(4, 16, 16, steps=2, rounds=2, train=64, val=32, test=32, epochs=2)


def _jax_step(sizes: Sizes, dtype: str, constrained: bool) -> Callable[[], None]:
  """One compiled, warmed-up train step of the article's network (see step_runner)."""
  run = step_runner(article_optimizer(constrained), sizes.batch_size, dtype=dtype,
                    conv_features=sizes.conv_features, dense_features=sizes.dense_features)
  run()  # Warm up.
  return run


def _torch_step(sizes: Sizes) -> Callable[[], None] | None:
  try:
    import torch  # noqa: PLC0415 -- optional peer
  except ImportError:
    return None
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  c, d = sizes.conv_features, sizes.dense_features
  model = torch.nn.Sequential(
      torch.nn.Conv2d(3, c, 3), torch.nn.ReLU(), torch.nn.Conv2d(c, c, 3), torch.nn.ReLU(),
      torch.nn.Conv2d(c, c, 3), torch.nn.ReLU(), torch.nn.Flatten(),
      torch.nn.Linear(26 * 26 * c, d), torch.nn.ReLU(), torch.nn.Linear(d, 10)).to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
  dense = model[7]
  images = torch.rand(sizes.batch_size, 3, 32, 32, device=device)
  labels = torch.randint(0, 10, (sizes.batch_size,), device=device)
  loss_fn = torch.nn.CrossEntropyLoss()

  def run() -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn(model(images), labels).backward()
    opt.step()
    with torch.no_grad():  # torch's Linear weight is (out, in): a neuron is a row, dim 0.
      dense.weight.copy_(torch.renorm(dense.weight, p=2, dim=0, maxnorm=3.0))
    if device == "cuda":
      torch.cuda.synchronize()
  run()
  run.device = device  # type: ignore[attr-defined]
  return run


def _time_rounds(runs: dict[str, Callable[[], None]], sizes: Sizes) -> dict[str, list[float]]:
  """Seconds per step of each run, per round; the runs alternate within a round."""
  times: dict[str, list[float]] = {name: [] for name in runs}
  for r in range(sizes.rounds):
    order = list(runs) if r % 2 == 0 else list(reversed(runs))
    for name in order:
      start = time.perf_counter()
      for _ in range(sizes.steps):
        runs[name]()
      times[name].append((time.perf_counter() - start) / sizes.steps)
  return times


def _peak(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  return next((peaks[dtype] for name, peaks in _PEAK_TFLOPS.items() if name in kind), None)


class _Source:
  """A random-access source of synthetic CIFAR-shaped examples (what tfds's gives)."""

  def __init__(self, n: int, seed: int):
    rng = np.random.default_rng(seed)
    self.images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    self.labels = rng.integers(0, 10, n).astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [{"image": self.images[i], "label": self.labels[i]} for i in indices]


def _end_to_end(sizes: Sizes) -> dict[str, float]:
  """The article's recipe through ``train_and_evaluate``, on synthetic data on device."""
  config = get_config("article", conv_features=sizes.conv_features,
                      dense_features=sizes.dense_features, batch_size=sizes.batch_size,
                      epochs=sizes.epochs, num_devices=1, keep_checkpoints=1)
  mesh = sharding.make_mesh(1)
  counts = (sizes.train, sizes.val, sizes.test)
  splits = input_pipeline.Splits(*(
      input_pipeline.shard_rows(_Source(n, seed), np.arange(n), mesh)
      for seed, n in enumerate(counts)))
  with tempfile.TemporaryDirectory() as workdir:
    summary = train_and_evaluate(config, workdir,
                                 data=(splits, input_pipeline.SplitSizes(*counts)))
    rows = [json.loads(line) for line in
            (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {"compile_s": summary["compile_seconds"], "total_s": summary["total_seconds"],
          "train_s": sum(r["train_seconds"] for r in rows),
          "epochs_s": sum(r["seconds"] for r in rows),
          "steps": summary["steps"]}


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true",
                 help="a tiny network and a few steps: checks the script runs (e.g. on CPU)")
  p.add_argument("--skip-end-to-end", action="store_true",
                 help="leave out part 4 (the 10-epoch run)")
  args = p.parse_args(argv)
  sizes = QUICK if args.quick else FULL
  device = jax.devices()[0]
  print(f"# device check | {datetime.date.today()} | jax {jax.__version__} | "
        f"{device.platform}: {device.device_kind} x {jax.device_count()} | "
        f"{'quick (tiny network)' if args.quick else 'the article network'}: conv "
        f"{sizes.conv_features}, dense {sizes.dense_features}, batch {sizes.batch_size} | "
        f"{sizes.rounds} rounds x {sizes.steps} steps", flush=True)

  runs = {"float32 + max_norm": _jax_step(sizes, "float32", True),
          "bfloat16 + max_norm": _jax_step(sizes, "bfloat16", True),
          "float32, Adam alone": _jax_step(sizes, "float32", False)}
  torch_run = _torch_step(sizes)
  if torch_run is not None:
    runs[f"PyTorch eager ({torch_run.device}) + renorm"] = torch_run  # type: ignore[attr-defined]
  else:
    print("PyTorch peer: skipped, torch is not installed", flush=True)
  times = _time_rounds(runs, sizes)

  print("\n## 1 and 3. Train step (Adam + max_norm(3) on the Dense(1024) kernel)\n")
  print(row(["step", "ms/step (median)", "img/s", "model TFLOP/s", "of peak"]))
  print(row(["---"] * 5))
  for name, run in runs.items():
    seconds = statistics.median(times[name])
    flops = getattr(run, "flops", None)
    tflops = flops * sizes.batch_size / seconds / 1e12 if flops else None
    peak = _peak("bfloat16" if "bfloat16" in name else "float32")
    print(row([name, f"{seconds * 1e3:.2f}", f"{sizes.batch_size / seconds:,.0f}",
                f"{tflops:.1f}" if tflops else "–",
                f"{tflops / peak:.0%}" if tflops and peak and "PyTorch" not in name else "–"]))

  ratios = [b / a for a, b in zip(times["float32, Adam alone"], times["float32 + max_norm"])]
  print("\n## 2. max_norm's overhead (float32)\n")
  print(f"Adam + max_norm over Adam alone, per round: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}), {len(ratios)} rounds", flush=True)

  if not args.skip_end_to_end:
    e2e = _end_to_end(sizes)
    print(f"\n## 4. The recipe end to end: {sizes.epochs} epochs x {sizes.train:,} images "
          f"({e2e['steps']:,} steps), validation on {sizes.val:,} and test on "
          f"{sizes.test:,}, synthetic data on the device\n")
    print(row(["compile s", "training s", "training + validation s",
                "total s (with start-up, checkpoints, test)"]))
    print(row(["---"] * 4))
    print(row([f"{e2e['compile_s']:.1f}", f"{e2e['train_s']:.1f}", f"{e2e['epochs_s']:.1f}",
                f"{e2e['total_s']:.1f}"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
