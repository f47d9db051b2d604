"""E3: does max-norm keep the weights from exploding at too-high learning rates?

Adam at 10x, 30x and 100x the article's 1e-4, and SGD with momentum 0.9 at
high rates, each without a constraint and with ``max_norm(3)`` on the hidden
dense layer (the article), and, where the budget affords it, on every kernel
(the Dropout paper); the short schedule logs steps, so the curves show when
a run blows up. A run *fails* if its loss became NaN/inf (the pipeline stops
it) or if it ended stuck at chance (see :func:`stuck_at_chance`).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from experiments.claims import e3_figures
from experiments.claims.arms import DENSE_ONLY, EVERY_KERNEL, NONE, C, arm_label, arm_of
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Designs, Experiment, Plot
from experiments.claims.results import (
  CHANCE_LOSS,
  CONVS,
  DENSE,
  LAYERS,
  RunResult,
  dense_name,
  largest_norm,
  row_norm,
)
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import fisher_exact
from experiments.markdown import Column, columns_table, number

__all__ = ["DESIGNS", "EXPERIMENT", "Failures", "blew_up", "failed", "failure_p", "failures",
           "grid", "stuck_at_chance"]

MOMENTUM = 0.9  # SGD's (heavy ball); lr / (1 - m) is SGD's effective step.
# (optimizer, learning rate): Adam at 10x, 30x and 100x the article's 1e-4;
# SGD at an effective step of 1 and 3.
SETTINGS: tuple[tuple[str, float], ...] = (
    ("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("sgd", 0.1), ("sgd", 0.3))


@dataclasses.dataclass(frozen=True)
class Design:
  """E3 under one budget.

  Attributes:
    seeds: each setting and arm runs once per seed.
    settings: the (optimizer, learning rate) pairs.
    every_kernel: also run max_norm(3) on every kernel (a third arm).
  """
  seeds: tuple[int, ...]
  settings: tuple[tuple[str, float], ...] = SETTINGS
  every_kernel: bool = True


# Per budget; any other budget gets the first. `cpu` keeps the settings its
# committed results were made with. The every-kernel arm is the Dropout paper's
# placement: at cpu-proxy, max-norm on the dense layer alone left the
# convolutions free to blow up at the high rates.
DESIGNS = Designs(Design(seeds=(0,)), {
    "cpu": Design(seeds=(0, 1), settings=SETTINGS[:4]),
    "cpu-proxy": Design(seeds=(0, 1, 2), every_kernel=True),
})

# "Stuck at chance": each of the last CHANCE_WINDOW logged batch losses is
# within CHANCE_TOLERANCE of ln 10, the loss of a uniform guess over 10 classes.
CHANCE_TOLERANCE = 0.05
CHANCE_WINDOW = 5

CLAIM = ("The article's second claim: max-norm keeps the weights from exploding, including "
         "when the learning rate is too high (the Dropout paper, Srivastava et al. 2014, pairs "
         "max-norm with large learning rates). Adam at 10x, 30x and 100x the article's 1e-4 "
         "and SGD with momentum 0.9 at high rates, each without a constraint and with "
         "max_norm(3) on the hidden dense layer (the article), and at some budgets on every "
         "kernel (the Dropout paper); steps are logged, so the curves show when a run blows "
         "up.")


def _runs(budget: Budget) -> list[RunSpec]:
  design = DESIGNS(budget)
  dense = dense_name(budget.config("short"))
  runs = []
  # Each setting without and with the article's constraint first; every-kernel
  # runs last, so a cut-short sweep still has the article's comparison.
  groups = [(NONE, DENSE_ONLY)] + ([(EVERY_KERNEL,)] if design.every_kernel else [])
  for arms in groups:
    for seed in design.seeds:
      for optimizer, lr in design.settings:
        for c, constrain in arms:
          labels = {"optimizer": optimizer, "lr": lr,
                    "constraint": arm_label(c, constrain, dense), "seed": seed}
          runs.append(make_run(budget, "short", labels, optimizer=optimizer, learning_rate=lr,
                               momentum=MOMENTUM, max_norm=c, constrain=constrain, seed=seed))
  return runs


# --- What happened to a run -----------------------------------------------------


def blew_up(r: RunResult) -> bool:
  """Some logged batch loss exceeded 10x the loss of the first logged step."""
  first = r.losses[0] if r.losses else None
  return first is not None and any(x is not None and x > 10 * first for x in r.losses)


def stuck_at_chance(r: RunResult) -> bool:
  """Not diverged, and each of the last :data:`CHANCE_WINDOW` logged batch losses is
  within :data:`CHANCE_TOLERANCE` of ln 10 (a uniform guess over the 10 classes)."""
  tail = r.losses[-CHANCE_WINDOW:]
  return (not r.diverged and bool(tail)
          and all(x is not None and abs(x - CHANCE_LOSS) <= CHANCE_TOLERANCE for x in tail))


def failed(r: RunResult) -> bool:
  """Diverged (NaN/inf) or stuck at chance."""
  return r.diverged or stuck_at_chance(r)


def _dense_last(r: RunResult) -> float | None:
  """The dense layer's largest neuron norm at the last logged step that measured norms."""
  return row_norm(r.last_logged_norms, DENSE)


def _others_last(r: RunResult) -> float | None:
  """The largest neuron norm of the other layers at the last logged step that measured
  norms."""
  return largest_norm(r.last_logged_norms, [layer for layer in LAYERS if layer != DENSE])


def _setting(r: RunResult) -> tuple[str, float]:
  return r.spec.labels["optimizer"], r.spec.labels["lr"]


def _tail_mean(r: RunResult, key: str) -> float | None:
  """The mean of ``key`` over the last :data:`CHANCE_WINDOW` logged steps that have a loss."""
  tail = [s for s in r.steps[-CHANCE_WINDOW:] if s.get("loss") is not None]
  return statistics.mean(s[key] for s in tail if s.get(key) is not None) if tail else None


def _max_loss(r: RunResult) -> float | None:
  return max((x for x in r.losses if x is not None), default=None)


def _yes(test: Callable[[RunResult], bool]) -> Callable[[RunResult], str]:
  return lambda r: "yes" if test(r) else "no"


def _per_run(dense: str) -> list[Column[RunResult]]:
  """The columns of the per-run table."""
  def label(key: str, text: Callable[[Any], str] = str) -> Column[RunResult]:
    return Column(key, lambda r: text(r.spec.labels[key]))
  return [
      label("optimizer"), label("lr", lambda lr: f"{lr:g}"), label("constraint"), label("seed"),
      Column("steps run / planned", lambda r: f"{number(r.steps_trained, 'd')} / "
                                              f"{number(r.planned_steps, 'd')}"),
      Column("diverged (NaN/inf)", lambda r: f"yes, step {r.get('diverged_at_step')}"
             if r.diverged else "no"),
      Column("stuck at chance", _yes(stuck_at_chance)),
      Column("blow-up (loss > 10x step 1)", _yes(blew_up)),
      Column("loss, step 1", lambda r: number(r.losses[0] if r.steps else None)),
      Column("max batch loss", lambda r: number(_max_loss(r), ".3g")),
      Column(f"loss, last {CHANCE_WINDOW} logged", lambda r: number(_tail_mean(r, "loss"))),
      Column(f"batch acc, last {CHANCE_WINDOW} logged",
             lambda r: number(_tail_mean(r, "accuracy"))),
      Column("val acc", lambda r: number(r.get("val_accuracy"))),
      Column("test acc", lambda r: number(r.get("test_accuracy"))),
      Column(f"{dense} max norm, last", lambda r: number(_dense_last(r), ".3g")),
      Column("other layers' max norm, last", lambda r: number(_others_last(r), ".3g")),
  ]


def _range(values: Sequence[float]) -> str:
  low, high = min(values), max(values)
  return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g} to {high:.3g}"


class Failures(NamedTuple):
  """How many of ``runs`` runs failed: ``nan`` diverged, ``chance`` stuck at chance."""
  runs: int
  nan: int
  chance: int

  @property
  def failed(self) -> int:
    return self.nan + self.chance

  def __str__(self) -> str:
    return f"{self.failed} of {self.runs} ({self.nan} NaN, {self.chance} at chance)"


def failures(runs: Sequence[RunResult],
             stuck: Callable[[RunResult], bool] = stuck_at_chance) -> Failures:
  """How many of ``runs`` diverged, and how many are ``stuck`` at chance (by default E3's
  rule, on the step log; E4 passes its own, on the epoch rows)."""
  return Failures(len(runs), sum(r.diverged for r in runs), sum(map(stuck, runs)))


def failure_p(free: Sequence[RunResult], held: Sequence[RunResult]) -> float | None:
  """Fisher's exact test (two-sided) of the failures without and with a constraint (None
  if either arm has no complete run)."""
  if not free or not held:
    return None
  a, b = failures(free), failures(held)
  return fisher_exact(a.failed, a.runs, b.failed, b.runs)


def grid(results: Sequence[RunResult]) -> tuple[list[tuple[str, float]],
                                                 list[tuple[float | None, str]],
                                                 dict[tuple[Any, Any], list[RunResult]]]:
  """Settings and arms in plan order, and the complete runs of each (setting, arm)."""
  settings = list(dict.fromkeys(map(_setting, results)))
  arms = list(dict.fromkeys(map(arm_of, results)))
  cells = {(s, a): [r for r in results if r.complete and _setting(r) == s and arm_of(r) == a]
           for s in settings for a in arms}
  return settings, arms, cells


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name(results)
  settings, arms, cells = grid(results)
  compared = [a for a in (DENSE_ONLY, EVERY_KERNEL) if NONE in arms and a in arms]
  counts = columns_table([
      Column("optimizer", lambda s: s[0]), Column("lr", lambda s: f"{s[1]:g}"),
      *(Column(f"{arm_label(*a, dense)}: failed", lambda s, a=a: str(failures(cells[s, a])))
        for a in arms),
      *(Column(f"p, none vs {arm_label(*a, dense)} (Fisher, two-sided)",
               lambda s, a=a: number(failure_p(cells[s, NONE], cells[s, a]), ".2f"))
        for a in compared),
  ], settings)
  done = [r for r in results if r.complete]
  per_run = columns_table(_per_run(dense), done)
  return [
      f"Failed runs per setting and arm: NaN/inf loss (the run stops there), or stuck at "
      f"chance (each of the last {CHANCE_WINDOW} logged batch losses within "
      f"{CHANCE_TOLERANCE:g} of ln 10 = {CHANCE_LOSS:.3f}, a uniform guess).\n\n{counts}",
      f"Per run. \"Steps run\" of a diverged run is the step of its first non-finite loss. The "
      f"last column is the largest neuron norm among the other layers at the last logged "
      f"step that measured norms.\n\n{per_run}"]


def _reading(results: Sequence[RunResult]) -> str:
  done = [r for r in results if r.complete]
  if not done:
    return ""
  dense = dense_name(results)
  settings, arms, cells = grid(results)
  counts = []
  for a in arms:
    runs = [r for s in settings for r in cells[s, a]]
    counts.append(f"{arm_label(*a, dense)}: {sum(r.diverged for r in runs)} of {len(runs)} "
                  f"diverged (NaN/inf), {sum(map(stuck_at_chance, runs))} stuck at chance, "
                  f"{sum(map(blew_up, runs))} blew up")
  lines = ["- " + "; ".join(counts) + ".",
           f"- A diverged run is stopped at its first non-finite batch loss (its val/test "
           f"accuracy is that of the NaN weights). \"Stuck at chance\": each of the last "
           f"{CHANCE_WINDOW} logged batch losses within {CHANCE_TOLERANCE:g} of ln 10. "
           f"\"Blow-up\": some logged batch loss exceeded 10x the first step's loss."]
  for arm in (a for a in (DENSE_ONLY, EVERY_KERNEL) if NONE in arms and a in arms):
    label, same = arm_label(*arm, dense), []
    for s in settings:
      free, held = cells[s, NONE], cells[s, arm]
      if not free or not held:
        continue
      f_free, f_held, name = failures(free), failures(held), f"{s[0]} {s[1]:g}"
      if f_free.failed * f_held.runs == f_held.failed * f_free.runs:  # The same share.
        same.append(f"{name} ({f_free.failed} of {f_free.runs})")
        continue
      p = failure_p(free, held)
      lines.append(
          f"- {name}: failed without the constraint {f_free}, with {label} "
          f"{f_held}; Fisher's exact test, two-sided p = {p:.2f}"
          + ("" if p < 0.05 else ": not distinguishable from noise at this number of seeds")
          + ".")
    if same:
      lines.append(f"- The same share of runs failed without the constraint and with {label} "
                   f"for: {', '.join(same)}; no effect on failure.")
  for layers, norm in ((f"{dense}'s", _dense_last),
                       ("The convolutions'", lambda r: largest_norm(r.last_logged_norms, CONVS))):
    ranges = []
    for arm in arms:
      values = [n for r in done if arm_of(r) == arm if (n := norm(r)) is not None]
      if values:
        ranges.append(f"{arm_label(*arm, dense)} {_range(values)}")
    if len(ranges) > 1:
      lines.append(f"- {layers} largest neuron norm at the last logged step (c = {C:g}): "
                   f"{'; '.join(ranges)}.")
  return "\n".join(lines)


EXPERIMENT = Experiment(
    key="e3", slug="e3_high_learning_rate", title="E3: max-norm at high learning rates",
    claim=CLAIM, schedule="short", runs=_runs, tables=_tables, reading=_reading,
    plots=(Plot("loss_accuracy", e3_figures.curves),
           Plot("max_neuron_norms", e3_figures.neuron_norms("max")),
           Plot("mean_neuron_norms", e3_figures.neuron_norms("mean"))))
