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
import math
import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

from experiments.claims import markdown as md
from experiments.claims import plotting
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Experiment, Plot
from experiments.claims.results import DENSE, LAYERS, RunResult, dense_name, row_norm
from experiments.claims.runs import RunSpec, make_run
from experiments.claims.stats import fisher_exact

__all__ = ["EXPERIMENT", "blew_up", "failed", "stuck_at_chance"]

C = 3.0
MOMENTUM = 0.9  # SGD's (heavy ball); lr / (1 - m) is SGD's effective step.
# (optimizer, learning rate): Adam at 10x, 30x and 100x the article's 1e-4;
# SGD at an effective step of 1 and 3.
SETTINGS: tuple[tuple[str, float], ...] = (
    ("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("sgd", 0.1), ("sgd", 0.3))

# Arms: (max_norm, constrain). None: no constraint.
NONE, DENSE_ONLY, EVERY_KERNEL = (None, "dense1"), (C, "dense1"), (C, "all")


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


# Per budget; any other budget gets DEFAULT. `cpu` keeps the settings its
# committed results were made with. The every-kernel arm is the Dropout paper's
# placement: at cpu-proxy, max-norm on the dense layer alone left the
# convolutions free to blow up at the high rates.
DESIGNS: dict[str, Design] = {
    "cpu": Design(seeds=(0, 1), settings=SETTINGS[:4]),
    "cpu-proxy": Design(seeds=(0, 1, 2), every_kernel=True),
}
DEFAULT = Design(seeds=(0,))

# "Stuck at chance": each of the last CHANCE_WINDOW logged batch losses is
# within CHANCE_TOLERANCE of ln 10, the loss of a uniform guess over 10 classes.
CHANCE_LOSS = math.log(10)
CHANCE_TOLERANCE = 0.05
CHANCE_WINDOW = 5

CLAIM = ("The article's second claim: max-norm keeps the weights from exploding, including "
         "when the learning rate is too high (the Dropout paper, Srivastava et al. 2014, pairs "
         "max-norm with large learning rates). Adam at 10x, 30x and 100x the article's 1e-4 "
         "and SGD with momentum 0.9 at high rates, each without a constraint and with "
         "max_norm(3) on the hidden dense layer (the article), and at some budgets on every "
         "kernel (the Dropout paper); steps are logged, so the curves show when a run blows "
         "up.")


def _arm_label(arm: tuple[float | None, str], dense: str) -> str:
  if arm[0] is None:
    return "none"
  return f"max_norm({arm[0]:g}), " + (dense if arm[1] == "dense1" else "every kernel")


def _runs(budget: Budget) -> list[RunSpec]:
  design = DESIGNS.get(budget.name, DEFAULT)
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
                    "constraint": _arm_label((c, constrain), dense), "seed": seed}
          runs.append(make_run(budget, "short", labels, optimizer=optimizer, learning_rate=lr,
                               momentum=MOMENTUM, max_norm=c, constrain=constrain, seed=seed))
  return runs


# --- What happened to a run -----------------------------------------------------


def _losses(r: RunResult) -> list[float | None]:
  return [s.get("loss") for s in r.steps]


def blew_up(r: RunResult) -> bool:
  """Some logged batch loss exceeded 10x the loss of the first logged step."""
  losses = _losses(r)
  first = losses[0] if losses else None
  return first is not None and any(x is not None and x > 10 * first for x in losses)


def stuck_at_chance(r: RunResult) -> bool:
  """Not diverged, and each of the last :data:`CHANCE_WINDOW` logged batch losses is
  within :data:`CHANCE_TOLERANCE` of ln 10 (a uniform guess over the 10 classes)."""
  tail = _losses(r)[-CHANCE_WINDOW:]
  return (not r.diverged and bool(tail)
          and all(x is not None and abs(x - CHANCE_LOSS) <= CHANCE_TOLERANCE for x in tail))


def failed(r: RunResult) -> bool:
  """Diverged (NaN/inf) or stuck at chance."""
  return r.diverged or stuck_at_chance(r)


def _last_norm(r: RunResult, layer: str, stat: str = "max") -> float | None:
  """``stat`` of ``layer`` at the last logged step that measured norms (a diverged step
  that was not a logged step has none)."""
  for row in reversed(r.steps):
    if row.get("neuron_norms"):
      return row_norm(row, layer, stat)
  return None


def _largest_last(r: RunResult, layers: Sequence[str]) -> float | None:
  """The largest of ``layers``' max neuron norms at the last logged step, or None."""
  values = [n for n in (_last_norm(r, layer) for layer in layers) if n is not None]
  return max(values) if values else None


def _convs_last(r: RunResult) -> float | None:
  return _largest_last(r, [layer for layer in LAYERS if layer.startswith("conv")])


def _others_last(r: RunResult) -> float | None:
  return _largest_last(r, [layer for layer in LAYERS if layer != DENSE])


def _arm(r: RunResult) -> tuple[float | None, str]:
  """The run's arm: :data:`NONE`, :data:`DENSE_ONLY` or :data:`EVERY_KERNEL`."""
  return (r.spec.config.max_norm, r.spec.config.constrain) if r.constrained else NONE


def _setting(r: RunResult) -> tuple[str, float]:
  return r.spec.labels["optimizer"], r.spec.labels["lr"]


def _row(r: RunResult) -> list[str]:
  losses = _losses(r)
  finite = [x for x in losses if x is not None]
  tail = [s for s in r.steps[-CHANCE_WINDOW:] if s.get("loss") is not None]
  labels = r.spec.labels
  return [
      labels["optimizer"], f"{labels['lr']:g}", labels["constraint"], str(labels["seed"]),
      f"{md.number(r.steps_trained, 'd')} / {md.number(r.planned_steps, 'd')}",
      f"yes, step {r.get('diverged_at_step')}" if r.diverged else "no",
      "yes" if stuck_at_chance(r) else "no", "yes" if blew_up(r) else "no",
      md.number(losses[0] if losses else None), md.number(max(finite) if finite else None, ".3g"),
      md.number(statistics.mean(s["loss"] for s in tail) if tail else None),
      md.number(statistics.mean(s["accuracy"] for s in tail if s.get("accuracy") is not None)
                if tail else None),
      md.number(r.get("val_accuracy")), md.number(r.get("test_accuracy")),
      md.number(_last_norm(r, DENSE), ".3g"), md.number(_others_last(r), ".3g"),
  ]


def _range(values: Sequence[float]) -> str:
  low, high = min(values), max(values)
  return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g} to {high:.3g}"


def _failures(runs: Sequence[RunResult]) -> str:
  nan, chance = sum(r.diverged for r in runs), sum(map(stuck_at_chance, runs))
  return f"{nan + chance} of {len(runs)} ({nan} NaN, {chance} at chance)"


def _grid(results: Sequence[RunResult]) -> tuple[list[tuple[str, float]],
                                                 list[tuple[float | None, str]],
                                                 dict[tuple[Any, Any], list[RunResult]]]:
  """Settings and arms in plan order, and the complete runs of each (setting, arm)."""
  settings = list(dict.fromkeys(map(_setting, results)))
  arms = list(dict.fromkeys(map(_arm, results)))
  cells = {(s, a): [r for r in results if r.complete and _setting(r) == s and _arm(r) == a]
           for s in settings for a in arms}
  return settings, arms, cells


def _tables(results: Sequence[RunResult], budget: Budget) -> list[str]:
  dense = dense_name([r.spec.config for r in results])
  settings, arms, cells = _grid(results)
  header = ["optimizer", "lr"] + [f"{_arm_label(a, dense)}: failed" for a in arms]
  compared = [a for a in (DENSE_ONLY, EVERY_KERNEL) if NONE in arms and a in arms]
  header += [f"p, none vs {_arm_label(a, dense)} (Fisher, two-sided)" for a in compared]
  rows = []
  for s in settings:
    row = [s[0], f"{s[1]:g}"] + [_failures(cells[s, a]) for a in arms]
    for arm in compared:
      free, held = cells[s, NONE], cells[s, arm]
      row.append(md.number(fisher_exact(sum(map(failed, free)), len(free),
                                        sum(map(failed, held)), len(held)), ".2f")
                 if free and held else "–")
    rows.append(row)
  counts = md.table(header, rows)
  done = [r for r in results if r.complete]
  per_run = md.table(
      ["optimizer", "lr", "constraint", "seed", "steps run / planned", "diverged (NaN/inf)",
       "stuck at chance", "blow-up (loss > 10x step 1)", "loss, step 1", "max batch loss",
       f"loss, last {CHANCE_WINDOW} logged", f"batch acc, last {CHANCE_WINDOW} logged",
       "val acc", "test acc", f"{dense} max norm, last", "other layers' max norm, last"],
      map(_row, done))
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
  dense = dense_name([r.spec.config for r in results])
  settings, arms, cells = _grid(results)
  counts = []
  for a in arms:
    runs = [r for s in settings for r in cells[s, a]]
    counts.append(f"{_arm_label(a, dense)}: {sum(r.diverged for r in runs)} of {len(runs)} "
                  f"diverged (NaN/inf), {sum(map(stuck_at_chance, runs))} stuck at chance, "
                  f"{sum(map(blew_up, runs))} blew up")
  lines = ["- " + "; ".join(counts) + ".",
           f"- A diverged run is stopped at its first non-finite batch loss (its val/test "
           f"accuracy is that of the NaN weights). \"Stuck at chance\": each of the last "
           f"{CHANCE_WINDOW} logged batch losses within {CHANCE_TOLERANCE:g} of ln 10. "
           f"\"Blow-up\": some logged batch loss exceeded 10x the first step's loss."]
  for arm in (a for a in (DENSE_ONLY, EVERY_KERNEL) if NONE in arms and a in arms):
    label, same = _arm_label(arm, dense), []
    for s in settings:
      free, held = cells[s, NONE], cells[s, arm]
      if not free or not held:
        continue
      f_free, f_held = sum(map(failed, free)), sum(map(failed, held))
      name = f"{s[0]} {s[1]:g}"
      if f_free * len(held) == f_held * len(free):  # The same share.
        same.append(f"{name} ({f_free} of {len(free)})")
        continue
      p = fisher_exact(f_free, len(free), f_held, len(held))
      lines.append(
          f"- {name}: failed without the constraint {_failures(free)}, with {label} "
          f"{_failures(held)}; Fisher's exact test, two-sided p = {p:.2f}"
          + ("" if p < 0.05 else ": not distinguishable from noise at this number of seeds")
          + ".")
    if same:
      lines.append(f"- The same share of runs failed without the constraint and with {label} "
                   f"for: {', '.join(same)}; no effect on failure.")
  for layers, norm in ((f"{dense}'s", lambda r: _last_norm(r, DENSE)),
                       ("The convolutions'", _convs_last)):
    ranges = []
    for arm in arms:
      values = [n for r in done if _arm(r) == arm if (n := norm(r)) is not None]
      if values:
        ranges.append(f"{_arm_label(arm, dense)} {_range(values)}")
    if len(ranges) > 1:
      lines.append(f"- {layers} largest neuron norm at the last logged step (c = {C:g}): "
                   f"{'; '.join(ranges)}.")
  return "\n".join(lines)


# --- Figures ------------------------------------------------------------------

# An arm's (line style, legend suffix, what the style means in a title).
_LINES = {NONE: ("-", "", "solid: no constraint"),
          DENSE_ONLY: ("--", " + max-norm dense", "dashed: max_norm(3) on the dense layer"),
          EVERY_KERNEL: (":", " + max-norm all", "dotted: on every kernel")}


def _line_key(results: Sequence[RunResult]) -> str:
  """What the line styles of ``results``' arms mean, e.g. "solid: no constraint; ..."."""
  return "; ".join(_LINES[a][2] for a in dict.fromkeys(map(_arm, results)) if a in _LINES)


def _style(r: RunResult, settings: list[tuple[str, float]], first_seed: int) -> dict[str, Any]:
  linestyle, suffix, _ = _LINES.get(_arm(r), ("-.", f" + {r.spec.labels['constraint']}", ""))
  labels = r.spec.labels
  return dict(color=f"C{settings.index(_setting(r)) % 10}", linestyle=linestyle,
              # One legend entry per setting and arm, not per seed.
              label=f"{labels['optimizer']} {labels['lr']:g}{suffix}"
              if labels["seed"] == first_seed else None)


def _logged(results: Sequence[RunResult]) -> tuple[list[RunResult], list[tuple[str, float]], int]:
  runs = [r for r in results if r.steps]
  settings = list(dict.fromkeys(map(_setting, results)))
  first_seed = min((r.spec.labels["seed"] for r in results), default=0)
  return runs, settings, first_seed


def _curves(results: Sequence[RunResult], path: pathlib.Path, label: str) -> pathlib.Path:
  """Batch loss and accuracy over steps; dashed: with max-norm; x: diverged (NaN/inf)."""
  runs, settings, first_seed = _logged(results)
  fig, axes = plotting.subplots(2, (11, 4))
  for r in runs:
    style = _style(r, settings, first_seed)
    steps = [row["step"] for row in r.steps]
    plotting.curve(axes[0], steps, _losses(r), style, log=True, diverged=r.diverged)
    plotting.curve(axes[1], steps, [row.get("accuracy") for row in r.steps],
                   {**style, "label": None}, diverged=r.diverged)
  axes[0].set_yscale("log")
  axes[0].set_title("training batch loss (log scale)")
  axes[1].set_title("training batch accuracy")
  for ax in axes:
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
  axes[0].axhline(CHANCE_LOSS, color="gray", linewidth=0.8)
  plotting.legend(axes[0], fontsize=7, ncol=2)
  return plotting.save(fig, path, f"E3 | budget: {label}\n{_line_key(results)}; x: loss "
                                  f"became NaN/inf; grey: ln 10 (chance)")


def _neuron_norms(stat: str):
  """The figure of the largest (``stat="max"``) or mean neuron norm of each layer over
  steps."""
  def draw(results: Sequence[RunResult], path: pathlib.Path, label: str) -> pathlib.Path:
    runs, settings, first_seed = _logged(results)
    fig, axes = plotting.subplots(len(LAYERS), (16, 3.6))
    for r in runs:
      style = _style(r, settings, first_seed)
      steps = [row["step"] for row in r.steps]
      for ax, layer in zip(axes, LAYERS):
        plotting.curve(ax, steps, [row_norm(row, layer, stat) for row in r.steps], style,
                       log=True)
    for ax, layer in zip(axes, LAYERS):
      ax.set_yscale("log")
      ax.set_title(layer.split("/")[0])
      ax.set_xlabel("optimizer step")
      ax.grid(alpha=0.3)
      ax.axhline(C, color="gray", linewidth=0.8)
    axes[0].set_ylabel(f"{stat} neuron norm (log scale)")
    plotting.legend(axes[0], fontsize=6)
    return plotting.save(fig, path, f"E3 | budget: {label}\n{stat} incoming-weight norm per "
                                    f"layer; {_line_key(results)}; grey: c = {C:g}")
  return draw


EXPERIMENT = Experiment(
    key="e3", slug="e3_high_learning_rate", title="E3: max-norm at high learning rates",
    claim=CLAIM, schedule="short", runs=_runs, tables=_tables, reading=_reading,
    plots=(Plot("loss_accuracy", _curves), Plot("max_neuron_norms", _neuron_norms("max")),
           Plot("mean_neuron_norms", _neuron_norms("mean"))))
