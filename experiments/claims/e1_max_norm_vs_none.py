"""E1: does max-norm regularise? The recipe with and without max_norm(3), paired by seed.

Each seed trains twice, without a constraint and with ``max_norm(3)`` on the
hidden dense layer's kernel (the article's placement); everything else,
initialisation and batch order included, is the same. The report gives
mean ± std per arm, the paired difference (with minus without) with a 95% t
interval for test accuracy and the train − validation gap, and per-epoch
evidence of whether the constraint acted.
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
from collections.abc import Sequence

from experiments import plotting
from experiments.claims import columns as col
from experiments.claims.arms import C, arm_label, compare, paired
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Designs, Experiment, Plot
from experiments.claims.results import DENSE, LAYERS, RunResult, dense_name, row_norm
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import PairedDifference, interval
from experiments.markdown import Column, columns_table, mean_std

__all__ = ["DESIGNS", "EXPERIMENT", "PAIRED", "differences", "pairs"]

@dataclasses.dataclass(frozen=True)
class Design:
  """E1 under one budget: each seed trains both arms."""
  seeds: tuple[int, ...]


DESIGNS = Designs(Design(seeds=(0, 1, 2)), {"cpu-proxy": Design(seeds=(0, 1, 2, 3, 4)),
                                            "cpu-proxy-45k": Design(seeds=(0, 1, 2, 3, 4))})

CLAIM = ("The article's first claim: max-norm (c = 3) on the hidden dense layer's kernel "
         "regularises the network. Same recipe, with and without the constraint, paired by "
         "seed (same initialisation and batch order); validation and test accuracy, the "
         "train − validation gap, whether and when the constraint acted, neuron norms, time.")


def _runs(budget: Budget) -> list[RunSpec]:
  with_label = arm_label(C, "dense1", dense_name(budget.config("regular")))
  runs = []
  for seed in DESIGNS(budget).seeds:  # Pairs by seed: a cut-short sweep leaves pairs.
    runs.append(make_run(budget, "regular", {"variant": "none", "seed": seed},
                         max_norm=None, seed=seed))
    runs.append(make_run(budget, "regular", {"variant": with_label, "seed": seed},
                         max_norm=C, constrain="dense1", seed=seed))
  return runs


def pairs(results: Sequence[RunResult]) -> list[tuple[RunResult, RunResult]]:
  """(without, with) pairs of complete runs of the same seed, by seed."""
  return paired([r for r in results if not r.constrained], [r for r in results if r.constrained])


def _arms(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
  """Complete runs per variant label, in plan order (without first)."""
  variants = dict.fromkeys(r.spec.labels["variant"] for r in results)
  return {v: [r for r in results if r.complete and r.spec.labels["variant"] == v]
          for v in variants}


# The quantities compared between the arms (with their label in the reading).
PAIRED = (col.Quantity("test accuracy", col.TEST_ACC.value),
          col.Quantity("train − val gap", col.GAP.value),
          col.Quantity("validation accuracy", col.VAL_ACC.value),
          col.Quantity("test loss", col.TEST_LOSS.value))


def differences(results: Sequence[RunResult]) -> dict[str, PairedDifference | None]:
  """Each :data:`PAIRED` quantity, with minus without the constraint, paired by seed."""
  free = [r for r in results if not r.constrained]
  held = [r for r in results if r.constrained]
  return {q.header: compare(free, held, q.value) for q in PAIRED}


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name(results)
  summary = columns_table([
      col.key("variant"), Column("budget", lambda g: budget.name),
      Column("seeds", lambda g: str(len(g[1]))), col.mean(col.VAL_ACC), col.mean(col.TEST_ACC),
      col.mean(col.TRAIN_ACC), col.mean(col.GAP), col.mean(col.VAL_LOSS),
      col.mean(col.dense_norm(dense, "max"), ".2f"), col.mean(col.dense_norm(dense, "mean"), ".2f"),
      col.mean(col.FRACTION), col.mean(col.WALL, ".0f", "wall s / run"),
      col.mean(col.Quantity("train img/s", lambda r: r.last_epoch.get("img_per_s")), ".1f"),
  ], _arms(results).items())
  both, diffs = pairs(results), differences(results)
  free, held = [a for a, _ in both], [b for _, b in both]
  paired_table = columns_table([
      Column("quantity", lambda q: q.header), Column("pairs", lambda q: str(len(both))),
      Column("without", lambda q: mean_std(map(q.value, free))),
      Column("with", lambda q: mean_std(map(q.value, held))),
      Column("with − without, 95% interval", lambda q: interval(diffs[q.header])),
      Column("interval contains 0", lambda q: "–" if (d := diffs[q.header]) is None
             else "yes" if d.contains_zero else "no"),
  ], PAIRED)
  done = sorted((r for r in results if r.complete),
                key=lambda r: (r.spec.labels["seed"], r.spec.labels["variant"]))
  per_seed = columns_table([
      Column("seed", lambda r: str(r.spec.labels["seed"])),
      Column("variant", lambda r: r.spec.labels["variant"]), col.each(col.VAL_ACC),
      col.each(col.TEST_ACC), col.each(col.TRAIN_ACC), col.each(col.GAP),
      col.each(col.VAL_LOSS, ".4f"), col.each(col.TEST_LOSS, ".4f"),
      col.each(col.dense_norm(dense)), col.each(col.FRACTION), col.each(col.WALL, ".0f"),
  ], done)
  return [
      "Mean ± sample std over seeds. Train accuracy is the running mean over the last epoch's "
      "batches while training; \"train − val\" is it minus validation accuracy; \"fraction at "
      f"bound\" is the share of {dense}'s neurons at norm c, averaged over the last epoch's "
      f"steps.\n\n{summary}",
      "Paired by seed (the two arms of a seed share initialisation and batch order): the mean "
      "of the per-seed differences, with a 95% t interval on n − 1 degrees of freedom.\n\n"
      + paired_table,
      f"Per seed:\n\n{per_seed}"]


def _activity(constrained: Sequence[RunResult], free: Sequence[RunResult]) -> list[str]:
  """Whether and when the constraint acted, and how far the free arm's norms grew."""
  dense = dense_name([*constrained, *free])
  lines = []
  bound_epochs = [r.bound_epochs for r in constrained]
  total = sum(len(r.metrics) for r in constrained)
  if bound_epochs and not any(bound_epochs):
    lines.append(f"- The constraint never bound (fraction at bound 0 in every epoch of every "
                 f"constrained run): no neuron of {dense} reached norm {C:g}, so the "
                 f"projection changed no weight. Any difference between the arms of one seed "
                 f"is then floating-point rounding (the two runs compile different programs), "
                 f"not regularisation.")
  elif bound_epochs:
    firsts = sorted(epochs[0] for epochs in bound_epochs if epochs)
    lines.append(
        f"- The constraint acted: fraction at bound > 0 in {sum(map(len, bound_epochs))} of "
        f"{total} epochs of the {len(constrained)} constrained runs ({len(firsts)} runs bound "
        f"at some epoch, first at epoch {firsts[0]}"
        + (f" to {firsts[-1]}" if firsts[-1] != firsts[0] else "")
        + f"); in the last epoch, fraction at bound "
          f"{mean_std(map(col.FRACTION.value, constrained))}.")
  ends = [n for n in (r.final_norm(DENSE, "max") for r in free) if n is not None]
  if ends:
    above = sum(n > C for n in ends)
    lines.append(f"- Without the constraint, {dense}'s largest neuron norm ended at "
                 f"{mean_std(ends, '.2f')} (above c = {C:g} in {above} of {len(ends)} runs).")
  return lines


def _reading(results: Sequence[RunResult]) -> str:
  both = pairs(results)
  if len(both) < 2:
    return "- Fewer than 2 complete pairs (same seed, both arms): no comparison yet."
  free, constrained = [a for a, _ in both], [b for _, b in both]
  lines = _activity(constrained, free)
  lines.append(f"- Without the constraint, train accuracy (the last epoch's running mean) was "
               f"{mean_std(r.train_accuracy for r in free)} against validation accuracy "
               f"{mean_std(r.get('val_accuracy') for r in free)}: a train − val gap of "
               f"{mean_std(r.train_val_gap for r in free)}.")
  for label, d in differences(results).items():
    if d is None:
      continue
    verdict = ("the interval contains 0: no effect distinguishable from noise" if d.contains_zero
               else f"the interval excludes 0: {'higher' if d.mean > 0 else 'lower'} with the "
                    f"constraint")
    lines.append(f"- {label}, with minus without: {d.mean:+.4f}, 95% interval "
                 f"[{d.low:+.4f}, {d.high:+.4f}] over {d.n} seed pairs (t, {d.n - 1} "
                 f"degrees of freedom); {verdict}.")
  deltas = [abs(b.get("val_accuracy") - a.get("val_accuracy")) for a, b in both
            if a.get("val_accuracy") is not None and b.get("val_accuracy") is not None]
  identical = [a.spec.labels["seed"] for a, b in both
               if [a.get(k) for k in ("val_loss", "test_loss")]
               == [b.get(k) for k in ("val_loss", "test_loss")]]
  if deltas:
    lines.append(f"- Same seed, with vs without: largest validation-accuracy difference "
                 f"{max(deltas):.4f} over {len(deltas)} seeds; seeds with bit-identical "
                 f"validation and test loss in both arms: {identical or 'none'}.")
  return "\n".join(lines)


# --- Figures ------------------------------------------------------------------


def _accuracy_by_seed(results: Sequence[RunResult], path: pathlib.Path, label: str
                      ) -> pathlib.Path:
  """Validation and test accuracy and the train − val gap of every seed, per arm (lines
  join a seed's two arms), with mean ± std."""
  arms = _arms(results)
  fig, axes = plotting.subplots(3, (12, 3.6))
  quantities = (("val_accuracy", "validation accuracy"), ("test_accuracy", "test accuracy"),
                ("gap", "train − val gap"))
  for ax, (key, title) in zip(axes, quantities):
    def value(r: RunResult, key: str = key) -> float | None:
      return r.train_val_gap if key == "gap" else r.get(key)
    for a, b in pairs(results):
      if value(a) is not None and value(b) is not None:
        ax.plot([0, 1], [value(a), value(b)], color="gray", linewidth=0.7, alpha=0.6)
    for x, runs in enumerate(arms.values()):
      values = [v for v in map(value, runs) if v is not None]
      ax.scatter([x] * len(values), values, color=f"C{x}", alpha=0.7, zorder=3)
      if values:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar([x + 0.15], [statistics.mean(values)], yerr=[std], fmt="s", color="black",
                    capsize=4, zorder=4)
    ax.set_xticks(range(len(arms)), list(arms), fontsize=7)
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("dots: seeds (lines join a seed's arms); square: mean ± std", fontsize=8)
  return plotting.save(fig, path, f"E1 | budget: {label}")


def _final_norms(results: Sequence[RunResult], path: pathlib.Path, label: str) -> pathlib.Path:
  """Largest and mean neuron norm of each layer at the end, per arm (mean over seeds)."""
  arms = _arms(results)
  fig, axes = plotting.subplots(2, (9, 3.6))
  width = 0.8 / max(len(arms), 1)
  for ax, stat in zip(axes, ("max", "mean")):
    for v, (variant, runs) in enumerate(arms.items()):
      heights = []
      for layer in LAYERS:
        values = [n for n in (r.final_norm(layer, stat) for r in runs) if n is not None]
        heights.append(statistics.mean(values) if values else float("nan"))
      ax.bar([i + v * width for i in range(len(LAYERS))], heights, width, label=variant)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(LAYERS))],
                  [layer.split("/")[0] for layer in LAYERS])
    ax.set_title(f"{stat} neuron norm after training")
    ax.grid(axis="y", alpha=0.3)
  axes[0].axhline(C, color="gray", linestyle=":", linewidth=1, label=f"c = {C:g}")
  plotting.legend(axes[0], fontsize=8)
  return plotting.save(fig, path, f"E1 | budget: {label}")


def _constraint_acted(results: Sequence[RunResult], path: pathlib.Path, label: str
                      ) -> pathlib.Path:
  """Per epoch, for every constrained run: the fraction of the dense layer's neurons at the
  bound, and its largest and mean neuron norm against c (grey: the runs without it)."""
  runs = [r for r in results if r.metrics]
  dense = dense_name(results)
  fig, axes = plotting.subplots(2, (11, 3.8))
  free_label: str | None = "no constraint: max"  # One legend entry for all runs without it.
  for r in runs:
    epochs = [row["epoch"] for row in r.metrics]
    seed = r.spec.labels["seed"]
    if not r.constrained:
      plotting.curve(axes[1], epochs, [row_norm(row, DENSE, "max") for row in r.metrics],
                     dict(color="gray", linestyle="--", linewidth=0.8, alpha=0.7,
                          label=free_label))
      free_label = None
      continue
    style = dict(color=f"C{seed % 10}", marker="o", markersize=3)
    plotting.curve(axes[0], epochs, [row.get("fraction_at_bound") for row in r.metrics],
                   {**style, "label": f"seed {seed}"}, diverged=r.diverged)
    plotting.curve(axes[1], epochs, [row_norm(row, DENSE, "max") for row in r.metrics],
                   {**style, "label": f"seed {seed}: max"})
    plotting.curve(axes[1], epochs, [row_norm(row, DENSE, "mean") for row in r.metrics],
                   {**style, "linestyle": ":", "label": f"seed {seed}: mean"})
  axes[0].set_title(f"fraction of {dense}'s neurons at the bound\n(mean over the epoch's steps)")
  axes[0].set_ylim(-0.02, 1.02)
  axes[1].axhline(C, color="black", linewidth=0.8, label=f"c = {C:g}")
  axes[1].set_title(f"{dense}'s neuron norms after each epoch")
  for ax in axes:
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  plotting.legend(axes[0], fontsize=7)
  plotting.legend(axes[1], fontsize=6, ncol=2)
  return plotting.save(fig, path, f"E1 | budget: {label}\nconstrained runs, per epoch; grey "
                                  f"dashed: the largest norm without the constraint")


EXPERIMENT = Experiment(
    key="e1", slug="e1_max_norm_vs_none",
    title="E1: the article's recipe with and without max_norm(3)",
    claim=CLAIM, schedule="regular", runs=_runs, tables=_tables, reading=_reading,
    plots=(Plot("accuracy_by_seed", _accuracy_by_seed),
           Plot("final_neuron_norms", _final_norms),
           Plot("constraint_acted", _constraint_acted)))
