"""E2: how the bound c and where it applies change the result.

For each seed: no constraint (c = ∞), then every c from the smallest (it
binds soonest) on the hidden dense layer's kernel only and on every kernel
(the convolutions included). Each setting is compared with c = ∞ of the same
seed. E1 and E2 share the runs they both need (c = 3 on the dense layer, and
no constraint, at E1's seeds).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
from collections.abc import Callable, Sequence

from experiments import plotting
from experiments.claims import columns as col
from experiments.claims.arms import PLACEMENTS, bound_text, compare, where
from experiments.claims.budgets import CIFAR10_TEST, Budget
from experiments.claims.experiment import Designs, Experiment, Plot
from experiments.claims.results import RunResult, dense_name
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import PairedDifference, interval
from experiments.markdown import Column, columns_table

__all__ = ["DESIGNS", "EXPERIMENT", "against_unconstrained", "binomial_noise"]

C_VALUES = (1.0, 1.5, 2.0, 3.0, 4.0, math.inf)  # inf: no constraint.


@dataclasses.dataclass(frozen=True)
class Design:
  """E2 under one budget: its seeds and its values of c."""
  seeds: tuple[int, ...]
  cs: tuple[float, ...] = C_VALUES


# Per budget; any other budget gets the first. `cpu` keeps the grid its
# committed results were made with.
DESIGNS = Designs(Design(seeds=(0,)), {
    "cpu": Design(seeds=(0,), cs=(1.0, 2.0, 3.0, 4.0, math.inf)),
    "cpu-proxy": Design(seeds=(0, 1, 2)),
})

CLAIM = ("How the bound c (from values that bind early to ∞, no constraint) and where it "
         "applies (the hidden dense layer's kernel only, or every kernel including the "
         "convolutions) change the result. Each setting is compared with c = ∞ of the same "
         "seed; the values of c are those in each budget's table.")


def _runs(budget: Budget) -> list[RunSpec]:
  design = DESIGNS(budget)
  runs = []
  for seed in design.seeds:
    # No constraint first (every comparison needs it), then the smallest c
    # first: it binds soonest, so a cut-short sweep keeps the runs most likely
    # to differ from no constraint.
    runs.append(make_run(budget, "regular", {"c": math.inf, "placement": "none", "seed": seed},
                         max_norm=None, seed=seed))
    for c in sorted(c for c in design.cs if math.isfinite(c)):
      for placement in PLACEMENTS:
        runs.append(make_run(budget, "regular", {"c": c, "placement": placement, "seed": seed},
                             max_norm=c, constrain=placement, seed=seed))
  return runs


def _setting(r: RunResult) -> tuple[float, str]:
  return r.spec.labels["c"], r.spec.labels["placement"]


def _by_setting(results: Sequence[RunResult]) -> dict[tuple[float, str], list[RunResult]]:
  """The complete runs of each setting: c ascending (∞ last), the dense layer first."""
  settings = sorted(set(map(_setting, results)),
                    key=lambda s: (s[0], PLACEMENTS.index(s[1]) if s[1] in PLACEMENTS else -1))
  return {s: [r for r in results if r.complete and _setting(r) == s] for s in settings}


def against_unconstrained(results: Sequence[RunResult], setting: tuple[float, str], value
                          ) -> PairedDifference | None:
  """``value`` of ``setting`` minus that of c = ∞, paired by seed."""
  return compare([r for r in results if not r.constrained],
                 [r for r in results if _setting(r) == setting], value)


# The quantities compared with c = ∞ (and the two sides of the gap).
_COMPARED = (col.Quantity("test accuracy", col.TEST_ACC.value),
             col.Quantity("train − val gap", col.GAP.value))
_SIDES = (col.Quantity("train accuracy", col.TRAIN_ACC.value),
          col.Quantity("validation accuracy", col.VAL_ACC.value))


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name(results)
  by_setting = _by_setting(results)

  def diff(q: col.Quantity, header: str) -> Column[col.Group]:
    return Column(header, lambda g: interval(against_unconstrained(results, g[0], q.value))
                  if math.isfinite(g[0][0]) else "–")
  summary = columns_table([
      col.key("c", lambda s: bound_text(s[0])),
      col.key("constrained", lambda s: where(s[1], dense)),
      Column("seeds", lambda g: str(len(g[1]))), col.mean(col.VAL_ACC), col.mean(col.TEST_ACC),
      col.mean(col.GAP), col.mean(col.FRACTION), col.mean(col.dense_norm(dense), ".2f"),
      col.mean(col.CONV_MAX, ".2f"), diff(col.TEST_ACC, "test acc − (c = ∞), 95% interval"),
      diff(col.GAP, "train − val − (c = ∞), 95% interval"),
  ], [(s, runs) for s, runs in by_setting.items() if runs])
  done = [r for runs in by_setting.values()
          for r in sorted(runs, key=lambda r: r.spec.labels["seed"])]
  per_run = columns_table([
      Column("c", lambda r: bound_text(r.spec.labels["c"])),
      Column("constrained", lambda r: where(r.spec.labels["placement"], dense)),
      Column("budget", lambda r: budget.name), Column("seed", lambda r: str(r.spec.labels["seed"])),
      col.each(col.VAL_ACC), col.each(col.TEST_ACC), col.each(col.TRAIN_ACC), col.each(col.GAP),
      col.each(col.VAL_LOSS, ".4f"), col.each(col.FRACTION), col.each(col.dense_norm(dense), ".2f"),
      col.each(col.CONV_MAX, ".2f"), col.each(col.WALL, ".0f"),
  ], done)
  return [
      "Mean ± sample std over seeds; the last two columns are the mean per-seed difference "
      "from c = ∞ with a 95% t interval (n − 1 degrees of freedom; – with fewer than 2 seeds). "
      "\"Fraction at bound\": the share of constrained neurons at norm c, averaged over the "
      f"last epoch's steps.\n\n{summary}",
      f"Per run:\n\n{per_run}"]


def binomial_noise(done: Sequence[RunResult]) -> tuple[int, float, float] | None:
  """(test images n, mean test accuracy p, binomial standard error sqrt(p (1 - p) / n)):
  the noise of one seed's test accuracy (None without a test accuracy)."""
  accuracies = [a for a in (r.get("test_accuracy") for r in done) if a is not None]
  if not accuracies:
    return None
  n = min(done[0].spec.config.eval_subset or CIFAR10_TEST, CIFAR10_TEST)
  p = statistics.mean(accuracies)
  return n, p, math.sqrt(p * (1 - p) / n)


def _against_infinity(results: Sequence[RunResult], settings: Sequence[tuple[float, str]],
                      name: Callable[[tuple[float, str]], str]) -> list[str]:
  """Each compared quantity of each setting against c = ∞, and how many intervals exclude 0."""
  lines, intervals, excluding, gap_changes = [], 0, 0, []
  for label, value in _COMPARED:
    noise, effects = [], []
    for setting in settings:
      d = against_unconstrained(results, setting, value)
      if d is None or d.n < 2:
        continue
      intervals += 1
      if d.contains_zero:
        noise.append(name(setting))
        continue
      excluding += 1
      effects.append(f"{name(setting)} ({'higher' if d.mean > 0 else 'lower'}: {interval(d)} "
                     f"over {d.n} seeds)")
      if label == _COMPARED[1].header:
        gap_changes.append(setting)
    if noise:
      lines.append(f"- {label} against c = ∞ (paired by seed, 95% interval): no effect "
                   f"distinguishable from noise for {', '.join(noise)}.")
    if effects:
      lines.append(f"- {label} against c = ∞: the interval excludes 0 for {'; '.join(effects)}.")
  for setting in gap_changes:  # Which side of the gap moved.
    sides = [(side, against_unconstrained(results, setting, value)) for side, value in _SIDES]
    parts = [f"{side} {interval(d)}" for side, d in sides if d is not None and d.n >= 2]
    if parts:
      lines.append(f"- Where the gap change of {name(setting)} comes from, against c = ∞: "
                   f"{', '.join(parts)}.")
  if intervals:
    lines.append(f"- {intervals} intervals at 95% are compared with 0 above, and {excluding} "
                 f"{'excludes' if excluding == 1 else 'exclude'} it. With no effect anywhere, "
                 f"about {0.05 * intervals:.1f} would exclude 0 by chance alone, so one interval "
                 f"that only just excludes 0 is weak evidence on its own.")
  return lines


def _reading(results: Sequence[RunResult]) -> str:
  done = [r for r in results if r.complete]
  if not done:
    return ""
  dense = dense_name(results)
  by_setting = _by_setting(results)
  constrained = [s for s, runs in by_setting.items() if runs and math.isfinite(s[0])]

  def name(setting: tuple[float, str]) -> str:
    return f"c={setting[0]:g} on {where(setting[1], dense)}"

  if max(len(runs) for runs in by_setting.values()) >= 2:
    lines = _against_infinity(results, constrained, name)
  elif noise := binomial_noise(done):
    n, p, se = noise
    lines = [f"- One seed per setting: on {n:,} test images an accuracy near {p:.2f} has a "
             f"binomial standard error of about {se:.3f}, so differences below about "
             f"{2 * se:.3f} are within noise."]
  else:
    lines = []
  hits = {s: sum(r.bound for r in by_setting[s]) for s in constrained}
  bound = [name(s) + (f" ({hits[s]} of {len(by_setting[s])} seeds)"
                      if len(by_setting[s]) > 1 else "") for s in constrained if hits[s]]
  idle = [name(s) for s in constrained if not hits[s]]
  if bound:
    lines.append(f"- The constraint bound (fraction at bound > 0 in some epoch) in: "
                 f"{', '.join(bound)}.")
  if idle:
    lines.append(f"- It never bound in: {', '.join(idle)}; those runs changed no weight, so "
                 f"they differ from c = ∞ by floating-point rounding only.")
  return "\n".join(lines)


def _accuracy_vs_c(results: Sequence[RunResult], path: pathlib.Path, label: str
                   ) -> pathlib.Path:
  """Validation and test accuracy and the train − val gap against c, for the dense layer
  only and every kernel: dots per seed, lines through the means (bars: ± std)."""
  done = [r for r in results if r.complete]
  dense = dense_name(results)
  cs = sorted({r.spec.labels["c"] for r in results})
  xs = {c: i for i, c in enumerate(cs)}
  fig, axes = plotting.subplots(3, (13, 3.6))
  for ax, (title, value) in zip(axes, (_SIDES[1], *_COMPARED)):
    for k, placement in enumerate(PLACEMENTS):
      offset = (k - 0.5) * 0.1  # Side by side at each c.
      means, stds, positions = [], [], []
      for c in cs:
        values = [v for v in (value(r) for r in done if r.spec.labels["c"] == c
                              and r.spec.labels["placement"] in (placement, "none"))
                  if v is not None]
        if not values:
          continue
        ax.scatter([xs[c] + offset] * len(values), values, color=f"C{k}", alpha=0.35, s=12)
        positions.append(xs[c] + offset)
        means.append(statistics.mean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
      if means:
        ax.errorbar(positions, means, yerr=stds, fmt="o-", color=f"C{k}", capsize=3,
                    label=f"{dense} only" if placement == "dense1" else "every kernel")
    ax.set_xticks(range(len(cs)), [bound_text(c) for c in cs])
    ax.set_xlabel("max-norm bound c (∞: no constraint)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("dots: seeds; line: mean ± std")
  plotting.legend(axes[0], fontsize=8)
  return plotting.save(fig, path, f"E2 | budget: {label}")


def _fraction_at_bound(results: Sequence[RunResult], path: pathlib.Path, label: str
                       ) -> pathlib.Path:
  """Per epoch, the fraction of the constrained neurons at the bound (mean over the
  epoch's steps, then over seeds), one line per c: where and how long each c acted."""
  dense = dense_name(results)
  fig, axes = plotting.subplots(len(PLACEMENTS), (11, 3.6), sharey=True)
  for ax, placement in zip(axes, PLACEMENTS):
    for k, ((c, placed), runs) in enumerate(_by_setting(results).items()):
      if placed != placement or not runs:
        continue
      epochs = sorted({row["epoch"] for r in runs for row in r.metrics})
      means = []
      for epoch in epochs:
        values = [row.get("fraction_at_bound") for r in runs for row in r.metrics
                  if row["epoch"] == epoch]
        present = [v for v in values if v is not None]
        means.append(statistics.mean(present) if present else None)
      plotting.curve(ax, epochs, means, dict(color=f"C{k // 2 % 10}", marker="o",
                                             markersize=3, label=f"c = {c:g}"))
    ax.set_title(f"constrained: {where(placement, dense)}")
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    plotting.legend(ax, fontsize=7)
  axes[0].set_ylabel("fraction of neurons at the bound\n(mean over steps and seeds)")
  return plotting.save(fig, path, f"E2 | budget: {label}")


EXPERIMENT = Experiment(
    key="e2", slug="e2_c_and_placement", title="E2: how the bound c and its placement matter",
    claim=CLAIM, schedule="regular", runs=_runs, tables=_tables, reading=_reading,
    plots=(Plot("accuracy_vs_c", _accuracy_vs_c),
           Plot("fraction_at_bound", _fraction_at_bound)))
