"""E4's figures: test accuracy against the learning rate, and the fraction of neurons at
the bound per epoch, one panel per optimizer.

One colour per arm (dropout x max-norm) in the first, one colour per learning
rate in the second (solid: no dropout, dashed: dropout); an x marks a failed
run (NaN/inf, or stuck at chance).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from experiments import plotting
from experiments.claims import e4_dropout_max_norm as e4
from experiments.claims.arms import EVERY_KERNEL
from experiments.claims.results import RunResult, dense_name

__all__ = ["accuracy_vs_lr", "fraction_at_bound"]


def _optimizers(results: Sequence[RunResult]) -> list[str]:
  return list(dict.fromkeys(r.spec.labels["optimizer"] for r in results)) or ["sgd"]


def accuracy_vs_lr(results: Sequence[RunResult], path: pathlib.Path, label: str
                   ) -> pathlib.Path:
  """Test accuracy against the learning rate per arm: the mean over seeds (line) and each
  seed (dot); x: a failed run."""
  grid, dense = e4.cells(results), dense_name(results)
  optimizers = _optimizers(results)
  fig, axes = plotting.subplots(len(optimizers), (5.5 * len(optimizers), 4), squeeze=False)
  for ax, optimizer in zip(axes[0], optimizers):
    for i, (dropout, arm) in enumerate(e4.ARMS):
      color = f"C{i}"
      points = sorted((lr, runs) for (o, lr, d, a), runs in grid.items()
                      if (o, d, a) == (optimizer, dropout, arm) and runs)
      means = [(lr, e4._mean([r.get("test_accuracy") for r in runs])) for lr, runs in points]
      plotting.curve(ax, [lr for lr, _ in means], [m for _, m in means],
                     dict(color=color, label=e4._arm_text(dropout, arm, dense)))
      for lr, runs in points:
        for r in runs:
          acc = r.get("test_accuracy")
          if acc is not None:
            ax.plot([lr], [acc], "x" if e4.failed(r) else ".", color=color, markersize=6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test accuracy")
    ax.set_title(optimizer + (f" (momentum {e4.MOMENTUM:g})" if optimizer == "sgd" else ""))
    plotting.legend(ax, fontsize=7)
  return plotting.save(fig, path, f"{label}\nx: a failed run (NaN/inf, or stuck at chance)")


def fraction_at_bound(results: Sequence[RunResult], path: pathlib.Path, label: str
                      ) -> pathlib.Path:
  """The fraction of constrained neurons at the bound per epoch, mean over seeds, per
  learning rate; solid: no dropout, dashed: dropout."""
  grid = e4.cells(results)
  optimizers = _optimizers(results)
  fig, axes = plotting.subplots(len(optimizers), (5.5 * len(optimizers), 4), squeeze=False)
  for ax, optimizer in zip(axes[0], optimizers):
    rates = sorted({lr for (o, lr, _, _) in grid if o == optimizer})
    for (o, lr, dropout, arm), runs in grid.items():
      if o != optimizer or arm != EVERY_KERNEL or not runs:
        continue
      fractions = e4._fraction_by_epoch(runs)
      plotting.curve(ax, list(range(1, len(fractions) + 1)), fractions,
                     dict(color=f"C{rates.index(lr) % 10}", linestyle="--" if dropout else "-",
                          label=f"lr {lr:g}" + (f", dropout {dropout:g}" if dropout else "")))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of neurons at the bound")
    ax.set_title(optimizer)
    plotting.legend(ax, fontsize=7)
  return plotting.save(fig, path, f"{label}\nmax-norm(3) on every kernel; solid: no dropout, "
                                  f"dashed: dropout {e4.DROPOUT:g}")
