"""E4: max-norm where it was introduced: with dropout, at high learning rates, high momentum.

Srivastava et al. 2014 (JMLR 15, the Dropout paper) call max-norm especially
useful together with dropout and large learning rates. E4 crosses dropout (0
or 0.5 on the hidden dense layer's outputs) with max-norm (none, or c = 3 on
every kernel, the paper's placement) over a learning-rate sweep, for SGD with
momentum 0.95 (the paper's recipe) and for Adam, paired by seed: the arms of
a seed share initialisation, batch order and dropout masks. SGD also gets
c = 1.5, a bound that binds at the rates where it trains (c = 3 does not, see
:data:`DESIGNS`). It asks, for each bound:

1. does max-norm improve test accuracy over dropout alone, each arm at its
   own best rate (chosen on validation accuracy)?
2. does it raise the highest rate that still trains (failures counted as E3
   counts them: NaN/inf, or stuck at chance)?
3. does it interact with dropout: the effect of max-norm with dropout minus
   its effect without, per seed?
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

from experiments.claims import e3_high_learning_rate as e3
from experiments.claims import e4_figures
from experiments.claims.arms import EVERY_KERNEL, NONE, Arm, C, arm_label, arm_of, compare, paired
from experiments.claims.budgets import Budget
from experiments.claims.e3_high_learning_rate import Failures
from experiments.claims.experiment import Designs, Experiment, Plot
from experiments.claims.results import CHANCE_LOSS, RunResult, dense_name
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import (
    PairedDifference,
    fisher_exact,
    interval,
    mean_present,
    paired_difference,
)
from experiments.markdown import Column, columns_table, mean_std, number

__all__ = ["ARMS", "DESIGNS", "EXPERIMENT", "MOMENTUM", "Cell", "Design", "arm_text", "arms",
           "best_rates", "bounds", "cells", "failed", "failures", "fraction_by_epoch",
           "highest_training_rate", "interaction", "stuck_at_chance"]

MOMENTUM = 0.95  # The Dropout paper's final momentum for its max-norm nets.
DROPOUT = 0.5  # On the hidden dense layer's outputs, the paper's rate for hidden units.

# (dropout rate, max-norm arm), in the order a seed trains them.
ARMS: tuple[tuple[float, Arm], ...] = ((0.0, NONE), (0.0, EVERY_KERNEL),
                                       (DROPOUT, NONE), (DROPOUT, EVERY_KERNEL))


@dataclasses.dataclass(frozen=True)
class Design:
  """E4 under one budget.

  Attributes:
    rates: per optimizer, the learning rates of the sweep (ascending).
    bounds: per optimizer, the max-norm bounds c (on every kernel) of its constrained
      arms; each is run with and without dropout. An optimizer not named has c = 3 only.
    seeds: every (optimizer, rate, arm) cell runs once per seed.
    paired_seeds: more seeds, at ``paired_rates`` only.
    paired_rates: the (optimizer, rate) settings that get ``paired_seeds`` too,
      chosen from the sweep's results ("the two most telling rates").
  """
  rates: dict[str, tuple[float, ...]]
  bounds: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
  seeds: tuple[int, ...] = (0, 1, 2)
  paired_seeds: tuple[int, ...] = (3, 4)
  paired_rates: tuple[tuple[str, float], ...] = ()

  def arms(self, optimizer: str) -> tuple[tuple[float, Arm], ...]:
    """(dropout, arm) of ``optimizer``'s runs, in the order a seed trains them: the
    four of :data:`ARMS` (c = 3), then each further bound without and with dropout."""
    return _arm_order(self.bounds.get(optimizer, (C,)))


def _arm_order(bounds: Sequence[float]) -> tuple[tuple[float, Arm], ...]:
  """:data:`ARMS` (c = 3), then each other bound of ``bounds`` without and with dropout."""
  return ARMS + tuple((d, (c, "all")) for c in bounds if c != C for d in (0.0, DROPOUT))


# SGD's rates run from an effective step lr / (1 - m) of 0.06 to 1 (at momentum 0.9,
# E3's SGD at an effective step of 1 already failed at cpu-proxy); Adam's top rate,
# 1e-2, failed in E3 without dropout. A first pass of seed 0 (and of seed 1 at the two
# lowest rates) also ran SGD at 0.001 and 0.1: 0.001 was below 0.003 in every arm, 0.1
# failed in every arm as 0.05 did, and c = 3 never bound at SGD's rates that train
# (0.001-0.01), so SGD gets a bound that binds there too, c = 1.5 (in E2 it bound from
# the first epochs); see the notes of the results. The paired rates, from seeds 0 and 1:
# the best rate of both dropout arms, where the constraint binds (SGD: c = 1.5, 32-43% of
# the neurons at the bound in the last epoch; Adam: c = 3, 39-44%).
DESIGNS = Designs(Design(rates={"sgd": (0.01, 0.1), "adam": (1e-3, 1e-2)}, seeds=(0, 1)), {
    "cpu-proxy": Design(rates={"sgd": (0.003, 0.01, 0.03, 0.05), "adam": (1e-3, 3e-3, 1e-2)},
                        bounds={"sgd": (C, 1.5)},
                        paired_rates=(("sgd", 0.01), ("adam", 1e-3))),
})

CLAIM = ("Max-norm where the Dropout paper (Srivastava et al. 2014) says it matters: together "
         "with dropout, at large learning rates with high momentum. Dropout 0 or 0.5 on the "
         "hidden dense layer's outputs, crossed with max-norm none or c = 3 on every kernel "
         f"(the paper's placement), over a learning-rate sweep, for SGD with momentum "
         f"{MOMENTUM:g} and for Adam; SGD also with c = 1.5, a bound that binds at the rates "
         "where SGD trains. The arms of a seed share initialisation, batch order and dropout "
         "masks. Best rates are chosen on validation accuracy; test accuracy is compared, "
         "paired by seed, with 95% t intervals.")


Cell = tuple[str, float, float, Arm]  # (optimizer, lr, dropout, arm)


def _runs(budget: Budget) -> list[RunSpec]:
  design = DESIGNS(budget)
  dense = dense_name(budget.config("regular"))

  def run(optimizer: str, lr: float, seed: int, dropout: float, arm: Arm) -> RunSpec:
    settings = dict(optimizer=optimizer, learning_rate=lr, dropout=dropout, max_norm=arm[0],
                    constrain=arm[1], seed=seed)
    if optimizer == "sgd":  # Adam's runs keep the default, so they share E1/E2's names.
      settings["momentum"] = MOMENTUM
    labels = {"optimizer": optimizer, "lr": lr, "dropout": dropout,
              "constraint": arm_label(*arm, dense), "seed": seed}
    return make_run(budget, "regular", labels, **settings)

  # Seed by seed over the whole grid (SGD, the paper's recipe, before Adam), the four
  # arms of a (rate, seed) one after another: a cut-short sweep leaves complete, paired
  # grids of both optimizers.
  runs = [run(optimizer, lr, seed, dropout, arm)
          for seed in design.seeds for optimizer, rates in design.rates.items()
          for lr in rates for dropout, arm in design.arms(optimizer)]
  runs += [run(optimizer, lr, seed, dropout, arm)
           for seed in design.paired_seeds for optimizer, lr in design.paired_rates
           for dropout, arm in design.arms(optimizer)]
  return runs


# --- What happened to a run -----------------------------------------------------

CHANCE_TOLERANCE = 0.05  # E3's: within 0.05 of ln 10.


def stuck_at_chance(r: RunResult) -> bool:
  """Not diverged, and the last epoch's mean training loss is within
  :data:`CHANCE_TOLERANCE` of ln 10 (a uniform guess over the 10 classes)."""
  loss = r.last_epoch.get("train_loss")
  return not r.diverged and loss is not None and abs(loss - CHANCE_LOSS) <= CHANCE_TOLERANCE


def failed(r: RunResult) -> bool:
  """Diverged (NaN/inf) or stuck at chance."""
  return r.diverged or stuck_at_chance(r)


def failures(runs: Sequence[RunResult]) -> Failures:
  """E3's count of failures, with E4's rule for "stuck at chance"."""
  return e3.failures(runs, stuck_at_chance)


def _cell(r: RunResult) -> Cell:
  labels = r.spec.labels
  return labels["optimizer"], labels["lr"], labels["dropout"], arm_of(r)


def cells(results: Sequence[RunResult]) -> dict[Cell, list[RunResult]]:
  """The complete runs of each (optimizer, lr, dropout, arm), in plan order."""
  grid: dict[Cell, list[RunResult]] = {}
  for r in results:
    grid.setdefault(_cell(r), [])
    if r.complete:
      grid[_cell(r)].append(r)
  return grid


def bounds(grid: dict[Cell, list[RunResult]], optimizer: str | None = None) -> list[float]:
  """The bounds c of the grid's constrained arms (of ``optimizer``; None: of any), c = 3
  first, then the others from the largest."""
  found = {a[0] for (o, _, _, a) in grid if a[0] is not None and optimizer in (None, o)}
  return sorted(found, key=lambda c: (c != C, -c))


def arms(grid: dict[Cell, list[RunResult]], optimizer: str | None = None
         ) -> list[tuple[float, Arm]]:
  """The (dropout, arm) pairs of the grid (of ``optimizer``; None: of any) in the order a
  seed trains them (as :meth:`Design.arms`): :data:`ARMS`, then each other bound without
  and with dropout."""
  present = {(d, a) for (o, _, d, a) in grid if optimizer in (None, o)}
  return [k for k in _arm_order(bounds(grid, optimizer)) if k in present]


def _acc(r: RunResult, split: str = "test") -> float | None:
  return r.get(f"{split}_accuracy")


def best_rates(grid: dict[Cell, list[RunResult]]) -> dict[tuple[str, float, Arm], float]:
  """Per (optimizer, dropout, arm), the rate of the highest mean validation accuracy over
  its seeds (a failed run counts with its accuracy), among rates with a complete run."""
  best: dict[tuple[str, float, Arm], tuple[float, float]] = {}
  for (optimizer, lr, dropout, arm), runs in grid.items():
    val = mean_present(_acc(r, "val") for r in runs)
    key = (optimizer, dropout, arm)
    if val is not None and (key not in best or val > best[key][1]):
      best[key] = (lr, val)
  return {k: lr for k, (lr, _) in best.items()}


def highest_training_rate(grid: dict[Cell, list[RunResult]], optimizer: str, dropout: float,
                          arm: Arm) -> tuple[float | None, bool]:
  """The highest rate of the sweep at which no run of the arm failed, and whether every
  rate above it failed in some run (False: a gap, or no rate above). None: every rate
  with runs had a failure."""
  rates = sorted(lr for (o, lr, d, a), runs in grid.items()
                 if (o, d, a) == (optimizer, dropout, arm) and runs)
  trains = [lr for lr in rates if not any(map(failed, grid[optimizer, lr, dropout, arm]))]
  if not trains:
    return None, bool(rates)
  top = max(trains)
  return top, any(lr > top for lr in rates)


def _effect(grid: dict[Cell, list[RunResult]], optimizer: str, lr: float, dropout: float,
            c: float) -> dict[int, float]:
  """Per seed at ``(optimizer, lr, dropout)``: test accuracy with max-norm ``c`` on every
  kernel minus without."""
  pairs = paired(grid.get((optimizer, lr, dropout, NONE), []),
                 grid.get((optimizer, lr, dropout, (c, "all")), []))
  return {free.spec.labels["seed"]: held_acc - free_acc for free, held in pairs
          if (free_acc := _acc(free)) is not None and (held_acc := _acc(held)) is not None}


def interaction(grid: dict[Cell, list[RunResult]], optimizer: str, lr: float, c: float = C
                ) -> PairedDifference | None:
  """Per seed at ``(optimizer, lr)``: max-norm ``c``'s effect on test accuracy with dropout
  minus its effect without, with its 95% t interval over seeds."""
  without, with_ = (_effect(grid, optimizer, lr, d, c) for d in (0.0, DROPOUT))
  return paired_difference([(without[s], with_[s]) for s in sorted(without.keys() & with_)])


# --- Tables -----------------------------------------------------------------------


def arm_text(dropout: float, arm: Arm, dense: str) -> str:
  """``dropout 0.5, max_norm(3), every kernel``, ``no dropout, none``."""
  drop = f"dropout {dropout:g}" if dropout else "no dropout"
  return f"{drop}, {arm_label(*arm, dense)}"


def _settings(grid: dict[Cell, list[RunResult]]) -> list[tuple[str, float]]:
  return list(dict.fromkeys((o, lr) for o, lr, _, _ in grid))


def fraction_by_epoch(runs: Sequence[RunResult]) -> list[float | None]:
  """The mean over ``runs`` of each epoch's fraction of neurons at the bound."""
  epochs = max((len(r.metrics) for r in runs), default=0)
  return [mean_present(r.metrics[e].get("fraction_at_bound") if e < len(r.metrics) else None
                       for r in runs) for e in range(epochs)]


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name(results)
  grid = cells(results)
  settings = _settings(grid)
  every_arm = arms(grid)

  def cell_text(s: tuple[str, float], d: float, a: Arm) -> str:
    runs = grid.get((*s, d, a), [])
    if not runs:
      return "–"
    f = failures(runs)
    return f"{mean_std(map(_acc, runs))} ({f.failed}/{f.runs} failed)"

  accuracy = columns_table([
      Column("optimizer", lambda s: s[0]), Column("lr", lambda s: f"{s[1]:g}"),
      *(Column(arm_text(d, a, dense), lambda s, d=d, a=a: cell_text(s, d, a))
        for d, a in every_arm),
      *(Column(f"p failures, dropout {d:g}: none vs max_norm({c:g})",
               lambda s, d=d, c=c: _fisher(grid.get((*s, d, NONE), []),
                                           grid.get((*s, d, (c, "all")), [])))
        for c in bounds(grid) for d in (0.0, DROPOUT)),
  ], settings)

  best = best_rates(grid)
  optimizers = list(dict.fromkeys(o for (o, _, _, _), runs in grid.items() if runs))
  rows = []
  for optimizer in optimizers:
    for d, a in arms(grid, optimizer):
      lr = best.get((optimizer, d, a))
      top, above = highest_training_rate(grid, optimizer, d, a)
      runs = grid.get((optimizer, lr, d, a), []) if lr is not None else []
      rows.append((optimizer, arm_text(d, a, dense), lr, runs, top, above))
  best_table = columns_table([
      Column("optimizer", lambda r: r[0]), Column("arm", lambda r: r[1]),
      Column("best lr (val acc)", lambda r: number(r[2], "g")),
      Column("test acc at best lr", lambda r: mean_std(map(_acc, r[3]))),
      Column("val acc at best lr", lambda r: mean_std(_acc(x, "val") for x in r[3])),
      Column("seeds", lambda r: str(len(r[3]))),
      Column("highest lr with no failure", lambda r: number(r[4], "g")
             + ("" if r[4] is None or r[5] else " (top of the sweep)")),
  ], rows)

  constrained = [(s, d, a) for s in settings for d, a in arms(grid, s[0])
                 if a != NONE and grid.get((*s, d, a))]
  epochs = max((len(r.metrics) for r in results if r.complete), default=0)
  shown = sorted({e for e in (1, 2, 4, 8, epochs) if 1 <= e <= epochs})
  fractions = columns_table([
      Column("optimizer", lambda k: k[0][0]), Column("lr", lambda k: f"{k[0][1]:g}"),
      Column("dropout", lambda k: f"{k[1]:g}"), Column("c", lambda k: f"{k[2][0]:g}"),
      *(Column(f"epoch {e}", lambda k, e=e: number(
          (fraction_by_epoch(grid[k[0][0], k[0][1], k[1], k[2]]) + [None] * epochs)[e - 1]))
        for e in shown),
  ], constrained)
  per_run = columns_table([
      Column("optimizer", lambda r: r.spec.labels["optimizer"]),
      Column("lr", lambda r: f"{r.spec.labels['lr']:g}"),
      Column("dropout", lambda r: f"{r.spec.labels['dropout']:g}"),
      Column("constraint", lambda r: r.spec.labels["constraint"]),
      Column("seed", lambda r: str(r.spec.labels["seed"])),
      Column("diverged", lambda r: f"yes, step {r.get('diverged_at_step')}" if r.diverged
             else "no"),
      Column("stuck at chance", lambda r: "yes" if stuck_at_chance(r) else "no"),
      Column("train loss, last epoch", lambda r: number(r.last_epoch.get("train_loss"))),
      Column("train acc", lambda r: number(r.train_accuracy)),
      Column("val acc", lambda r: number(_acc(r, "val"))),
      Column("test acc", lambda r: number(_acc(r))),
      Column("fraction at bound, last epoch",
             lambda r: number(r.last_epoch.get("fraction_at_bound"))),
      Column("wall s", lambda r: number(r.get("total_seconds"), ".0f")),
  ], [r for r in results if r.complete])
  return [
      f"Test accuracy (mean ± std over seeds) per setting and arm, and how many runs failed "
      f"(NaN/inf loss, or the last epoch's training loss within {CHANCE_TOLERANCE:g} of "
      f"ln 10 = {CHANCE_LOSS:.3f}); p: Fisher's exact test (two-sided) of the failures "
      f"without and with max-norm.\n\n{accuracy}",
      f"Each arm at its best rate (the highest mean validation accuracy), and the highest "
      f"rate at which none of its runs failed.\n\n{best_table}",
      f"Fraction of the constrained neurons at the bound (max-norm c on every kernel) in "
      f"each epoch, mean over seeds.\n\n{fractions}",
      f"Per run.\n\n{per_run}"]


def _fisher(free: Sequence[RunResult], held: Sequence[RunResult]) -> str:
  if not free or not held:
    return "–"
  a, b = failures(free), failures(held)
  return f"{fisher_exact(a.failed, a.runs, b.failed, b.runs):.2f}"


# --- Reading ----------------------------------------------------------------------


def _bound_text(held: Sequence[RunResult]) -> str:
  """Whether, and how much, the constraint acted in ``held`` (constrained runs): a
  difference where it never bound is not its doing (see the notes on rounding)."""
  bound = sum(r.bound for r in held)
  text = f"; the constraint bound in {bound} of {len(held)} of these runs"
  if held and not bound:
    return text + " (so the difference is not its doing)"
  last = mean_present(r.last_epoch.get("fraction_at_bound") for r in held)
  return text + ("" if last is None else
                 f" ({last:.3f} of the neurons at the bound in the last epoch, on average)")


def _verdict(d: PairedDifference | None, what: str) -> str:
  if d is None:
    return f"{what}: fewer than 2 paired seeds, no interval yet"
  sign = "higher" if d.mean > 0 else "lower"
  verdict = ("the interval contains 0: not distinguishable from noise" if d.contains_zero
             else f"{sign}, the interval excludes 0")
  return f"{what}: {interval(d)} over {d.n} seeds ({verdict})"


def _reading(results: Sequence[RunResult]) -> str:
  if not any(r.complete for r in results):
    return ""
  dense = dense_name(results)
  grid = cells(results)
  best = best_rates(grid)
  lines = []
  for optimizer in dict.fromkeys(o for (o, _, _, _), runs in grid.items() if runs):
    # 1. Max-norm over dropout alone, each at its best rate.
    lr_free = best.get((optimizer, DROPOUT, NONE))
    for c in bounds(grid, optimizer):
      held_arm: Arm = (c, "all")
      lr_held = best.get((optimizer, DROPOUT, held_arm))
      if lr_free is None or lr_held is None:
        continue
      held = grid[optimizer, lr_held, DROPOUT, held_arm]
      d = compare(grid[optimizer, lr_free, DROPOUT, NONE], held, _acc)
      lines.append(f"- {optimizer}, question 1: " + _verdict(
          d, f"dropout {DROPOUT:g} + max_norm({c:g}) at its best rate {lr_held:g} minus "
             f"dropout alone at its best rate {lr_free:g}, test accuracy")
          + _bound_text(held) + ".")
    # As the Dropout paper's Table 9: each arm against neither, each at its best rate.
    base = best.get((optimizer, 0.0, NONE))
    if base is not None:
      for dropout, arm in arms(grid, optimizer):
        lr = best.get((optimizer, dropout, arm))
        if (dropout, arm) == (0.0, NONE) or lr is None:
          continue
        runs = grid[optimizer, lr, dropout, arm]
        d = compare(grid[optimizer, base, 0.0, NONE], runs, _acc)
        lines.append(f"- {optimizer}: " + _verdict(
            d, f"{arm_text(dropout, arm, dense)} (best rate {lr:g}) minus neither (best "
               f"rate {base:g}), test accuracy")
            + (_bound_text(runs) if arm != NONE else "") + ".")
    # 2. The highest rate that trains.
    tops = []
    for dropout, arm in arms(grid, optimizer):
      top, above = highest_training_rate(grid, optimizer, dropout, arm)
      text = ("every rate had a failure" if top is None
              else f"{top:g}" + ("" if above else " (top of the sweep)"))
      tops.append(f"{arm_text(dropout, arm, dense)}: {text}")
    lines.append(f"- {optimizer}, question 2, the highest rate at which no run failed: "
                 + "; ".join(tops) + ".")
    # 3. Interaction, at each rate where all four arms of a bound have paired seeds.
    for o, lr in _settings(grid):
      for c in bounds(grid, optimizer) if o == optimizer else ():
        d = interaction(grid, optimizer, lr, c)
        if d is not None:
          held = [r for dropout in (0.0, DROPOUT)
                  for r in grid.get((optimizer, lr, dropout, (c, "all")), [])]
          lines.append(f"- {optimizer} {lr:g}, question 3: " + _verdict(
              d, f"max_norm({c:g})'s effect on test accuracy with dropout minus without")
              + _bound_text(held) + ".")
  return "\n".join(lines)


# --- Figures (drawn by e4_figures, from what is computed here) --------------------


def _accuracy_vs_lr(results: Sequence[RunResult], path: pathlib.Path, label: str
                    ) -> pathlib.Path:
  grid, dense = cells(results), dense_name(results)
  panels = []
  for optimizer in _optimizers(results):
    lines = []
    for dropout, arm in arms(grid, optimizer):
      points = sorted((lr, runs) for (o, lr, d, a), runs in grid.items()
                      if (o, d, a) == (optimizer, dropout, arm) and runs)
      lines.append(e4_figures.Line(
          arm_text(dropout, arm, dense),
          [(lr, mean_present(map(_acc, runs)),
            [(acc, failed(r)) for r in runs if (acc := _acc(r)) is not None])
           for lr, runs in points]))
    panels.append(e4_figures.Panel(_title(optimizer), lines))
  return e4_figures.accuracy_vs_lr(panels, path, label)


def _fraction_at_bound(results: Sequence[RunResult], path: pathlib.Path, label: str
                       ) -> pathlib.Path:
  grid = cells(results)
  panels = []
  for optimizer in _optimizers(results):
    rates = sorted({lr for (o, lr, _, _) in grid if o == optimizer})
    curves = [e4_figures.BoundCurve(rates.index(lr), dropout, c, lr, fraction_by_epoch(runs))
              for (o, lr, dropout, (c, _)), runs in grid.items()
              if o == optimizer and c is not None and runs]
    panels.append(e4_figures.Panel(_title(optimizer), curves))
  return e4_figures.fraction_at_bound(panels, path, label)


def _optimizers(results: Sequence[RunResult]) -> list[str]:
  return list(dict.fromkeys(r.spec.labels["optimizer"] for r in results)) or ["sgd"]


def _title(optimizer: str) -> str:
  return optimizer + (f" (momentum {MOMENTUM:g})" if optimizer == "sgd" else "")


EXPERIMENT = Experiment(
    key="e4", slug="e4_dropout_max_norm",
    title="E4: dropout × max-norm × learning rate", claim=CLAIM, schedule="regular",
    runs=_runs, tables=_tables, reading=_reading,
    plots=(Plot("accuracy_vs_lr", _accuracy_vs_lr),
           Plot("fraction_at_bound", _fraction_at_bound)),
    sets_recipe=True)
