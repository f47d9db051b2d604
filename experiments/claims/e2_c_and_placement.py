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
from collections.abc import Sequence

from experiments.claims import markdown as md
from experiments.claims import plotting
from experiments.claims.budgets import CIFAR10_TEST, Budget
from experiments.claims.experiment import Experiment, Plot
from experiments.claims.results import DENSE, RunResult, dense_name
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import PairedDifference, paired_difference

__all__ = ["EXPERIMENT"]

PLACEMENTS = ("dense1", "all")  # Config.constrain values: the dense layer only, every kernel.
C_VALUES = (1.0, 1.5, 2.0, 3.0, 4.0, math.inf)  # inf: no constraint.


@dataclasses.dataclass(frozen=True)
class Design:
  """E2 under one budget: its seeds and its values of c."""
  seeds: tuple[int, ...]
  cs: tuple[float, ...] = C_VALUES


# Per budget; any other budget gets DEFAULT. `cpu` keeps the grid its committed
# results were made with.
DESIGNS: dict[str, Design] = {
    "cpu": Design(seeds=(0,), cs=(1.0, 2.0, 3.0, 4.0, math.inf)),
    "cpu-proxy": Design(seeds=(0, 1, 2)),
}
DEFAULT = Design(seeds=(0,))

CLAIM = ("How the bound c (from values that bind early to ∞, no constraint) and where it "
         "applies (the hidden dense layer's kernel only, or every kernel including the "
         "convolutions) change the result. Each setting is compared with c = ∞ of the same "
         "seed; the values of c are those in each budget's table.")


def _runs(budget: Budget) -> list[RunSpec]:
  design = DESIGNS.get(budget.name, DEFAULT)
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


def _where(placement: str, dense: str) -> str:
  return {"dense1": dense, "all": "every kernel"}.get(placement, "–")


def _largest(r: RunResult, prefix: str) -> float | None:
  """The largest neuron norm among the layers whose name starts with ``prefix``."""
  values = [s.get("max") for layer, s in (r.last_epoch.get("neuron_norms") or {}).items()
            if layer.startswith(prefix) and s and s.get("max") is not None]
  return max(values) if values else None


def _bound(r: RunResult) -> bool:
  """The constraint bound (fraction at bound > 0) in some epoch."""
  return any((row.get("fraction_at_bound") or 0) > 0 for row in r.metrics)


def _by_setting(results: Sequence[RunResult]) -> dict[tuple[float, str], list[RunResult]]:
  """The complete runs of each setting: c ascending (∞ last), the dense layer first."""
  settings = sorted(set(map(_setting, results)),
                    key=lambda s: (s[0], PLACEMENTS.index(s[1]) if s[1] in PLACEMENTS else -1))
  return {s: [r for r in results if r.complete and _setting(r) == s] for s in settings}


def _against_unconstrained(results: Sequence[RunResult], setting: tuple[float, str], value
                           ) -> PairedDifference | None:
  """The setting minus c = ∞, paired by seed."""
  free = {r.spec.labels["seed"]: r for r in results if r.complete and not r.constrained}
  pairs = [(value(free[r.spec.labels["seed"]]), value(r)) for r in results
           if r.complete and _setting(r) == setting and r.spec.labels["seed"] in free]
  return paired_difference([(a, b) for a, b in pairs if a is not None and b is not None])


def _gap(r: RunResult) -> float | None:
  return r.train_val_gap


def _train(r: RunResult) -> float | None:
  return r.train_accuracy


def _val(r: RunResult) -> float | None:
  return r.get("val_accuracy")


_COMPARED = (("test accuracy", lambda r: r.get("test_accuracy")),
             ("train − val gap", _gap))


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name([r.spec.config for r in results])
  by_setting = _by_setting(results)
  summary_rows = []
  for (c, placement), runs in by_setting.items():
    if not runs:
      continue
    diffs = [md.interval(_against_unconstrained(results, (c, placement), value))
             if math.isfinite(c) else "–" for _, value in _COMPARED]
    summary_rows.append([
        md.bound_text(c), _where(placement, dense), str(len(runs)),
        md.mean_std([r.get("val_accuracy") for r in runs]),
        md.mean_std([r.get("test_accuracy") for r in runs]),
        md.mean_std([r.train_val_gap for r in runs]),
        md.mean_std([r.last_epoch.get("fraction_at_bound") for r in runs]),
        md.mean_std([r.final_norm(DENSE, "max") for r in runs], ".2f"),
        md.mean_std([_largest(r, "conv") for r in runs], ".2f"), *diffs])
  summary = md.table(
      ["c", "constrained", "seeds", "val acc", "test acc", "train − val", "fraction at bound",
       f"{dense} max norm", "conv max norm", "test acc − (c = ∞), 95% interval",
       "train − val − (c = ∞), 95% interval"], summary_rows)
  done = [r for runs in by_setting.values() for r in sorted(runs, key=lambda r:
                                                            r.spec.labels["seed"])]
  per_run = md.table(
      ["c", "constrained", "budget", "seed", "val acc", "test acc", "train acc", "train − val",
       "val loss", "fraction at bound", f"{dense} max norm", "conv max norm", "wall s"],
      [[md.bound_text(r.spec.labels["c"]), _where(r.spec.labels["placement"], dense),
        budget.name, str(r.spec.labels["seed"]), md.number(r.get("val_accuracy")),
        md.number(r.get("test_accuracy")), md.number(r.train_accuracy),
        md.number(r.train_val_gap), md.number(r.get("val_loss"), ".4f"),
        md.number(r.last_epoch.get("fraction_at_bound")),
        md.number(r.final_norm(DENSE, "max"), ".2f"), md.number(_largest(r, "conv"), ".2f"),
        md.number(r.get("total_seconds"), ".0f")] for r in done])
  return [
      "Mean ± sample std over seeds; the last two columns are the mean per-seed difference "
      "from c = ∞ with a 95% t interval (n − 1 degrees of freedom; – with fewer than 2 seeds). "
      "\"Fraction at bound\": the share of constrained neurons at norm c, averaged over the "
      f"last epoch's steps.\n\n{summary}",
      f"Per run:\n\n{per_run}"]


def _reading(results: Sequence[RunResult]) -> str:
  done = [r for r in results if r.complete]
  if not done:
    return ""
  dense = dense_name([r.spec.config for r in results])
  by_setting = _by_setting(results)

  def name(setting: tuple[float, str]) -> str:
    return f"c={setting[0]:g} on {_where(setting[1], dense)}"

  lines = []
  if max(len(runs) for runs in by_setting.values()) < 2:
    accuracies = [a for a in (r.get("test_accuracy") for r in done) if a is not None]
    n = min(done[0].spec.config.eval_subset or CIFAR10_TEST, CIFAR10_TEST)
    if accuracies:
      p = statistics.mean(accuracies)
      se = math.sqrt(p * (1 - p) / n)
      lines.append(f"- One seed per setting: on {n:,} test images an accuracy near {p:.2f} has "
                   f"a binomial standard error of about {se:.3f}, so differences below about "
                   f"{2 * se:.3f} are within noise.")
  else:
    intervals = excluding = 0
    gap_changes = []
    for label, value in _COMPARED:
      noise, effects = [], []
      for setting in by_setting:
        if not math.isfinite(setting[0]):
          continue
        d = _against_unconstrained(results, setting, value)
        if d is None or d.n < 2:
          continue
        intervals += 1
        if d.contains_zero:
          noise.append(name(setting))
        else:
          excluding += 1
          direction = "higher" if d.mean > 0 else "lower"
          effects.append(f"{name(setting)} ({direction}: {md.interval(d)} over {d.n} seeds)")
          if value is _gap:
            gap_changes.append(setting)
      if noise:
        lines.append(f"- {label} against c = ∞ (paired by seed, 95% interval): no effect "
                     f"distinguishable from noise for {', '.join(noise)}.")
      if effects:
        lines.append(f"- {label} against c = ∞: the interval excludes 0 for "
                     f"{'; '.join(effects)}.")
    for setting in gap_changes:  # Which side of the gap moved.
      parts = []
      for side, side_value in (("train accuracy", _train), ("validation accuracy", _val)):
        d = _against_unconstrained(results, setting, side_value)
        if d is not None and d.n >= 2:
          parts.append(f"{side} {md.interval(d)}")
      if parts:
        lines.append(f"- Where the gap change of {name(setting)} comes from, against c = ∞: "
                     f"{', '.join(parts)}.")
    if intervals:
      lines.append(f"- {intervals} intervals at 95% are compared with 0 above, and "
                   f"{excluding} {'excludes' if excluding == 1 else 'exclude'} it. With no "
                   f"effect anywhere, about "
                   f"{0.05 * intervals:.1f} would exclude 0 by chance alone, so one interval "
                   f"that only just excludes 0 is weak evidence on its own.")

  bound, idle = [], []
  for setting, runs in by_setting.items():
    if not runs or not math.isfinite(setting[0]):
      continue
    hits = sum(map(_bound, runs))
    seeds = f" ({hits} of {len(runs)} seeds)" if len(runs) > 1 and hits else ""
    (bound if hits else idle).append(name(setting) + seeds)
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
  dense = dense_name([r.spec.config for r in results])
  cs = sorted({r.spec.labels["c"] for r in results})
  xs = {c: i for i, c in enumerate(cs)}
  fig, axes = plotting.subplots(3, (13, 3.6))
  quantities = (("validation accuracy", lambda r: r.get("val_accuracy")),
                ("test accuracy", lambda r: r.get("test_accuracy")),
                ("train − val gap", lambda r: r.train_val_gap))
  for ax, (title, value) in zip(axes, quantities):
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
    ax.set_xticks(range(len(cs)), [md.bound_text(c) for c in cs])
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
  dense = dense_name([r.spec.config for r in results])
  fig, axes = plotting.subplots(len(PLACEMENTS), (11, 3.6), sharey=True)
  for ax, placement in zip(axes, PLACEMENTS):
    for k, ((c, where), runs) in enumerate(_by_setting(results).items()):
      if where != placement or not runs:
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
    ax.set_title(f"constrained: {_where(placement, dense)}")
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
