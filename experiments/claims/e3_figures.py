"""E3's figures: batch loss and accuracy, and each layer's neuron norms, over steps.

One colour per (optimizer, learning rate), one line style per arm (see
:data:`LINES`), one legend entry per setting and arm; an x marks where a
run's loss became NaN/inf.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from experiments import plotting
from experiments.claims.arms import DENSE_ONLY, EVERY_KERNEL, NONE, C, arm_of
from experiments.claims.results import CHANCE_LOSS, LAYERS, RunResult, row_norm

__all__ = ["LINES", "curves", "neuron_norms"]


def _setting(r: RunResult) -> tuple[str, float]:
  return r.spec.labels["optimizer"], r.spec.labels["lr"]


# An arm's (line style, legend suffix, what the style means in a title).
LINES = {NONE: ("-", "", "solid: no constraint"),
          DENSE_ONLY: ("--", " + max-norm dense", "dashed: max_norm(3) on the dense layer"),
          EVERY_KERNEL: (":", " + max-norm all", "dotted: on every kernel")}


def _line_key(results: Sequence[RunResult]) -> str:
  """What the line styles of ``results``' arms mean, e.g. "solid: no constraint; ..."."""
  return "; ".join(LINES[a][2] for a in dict.fromkeys(map(arm_of, results)) if a in LINES)


def _style(r: RunResult, settings: list[tuple[str, float]], first_seed: int) -> dict[str, Any]:
  linestyle, suffix, _ = LINES.get(arm_of(r), ("-.", f" + {r.spec.labels['constraint']}", ""))
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


def curves(results: Sequence[RunResult], path: pathlib.Path, label: str) -> pathlib.Path:
  """Batch loss and accuracy over steps; dashed: with max-norm; x: diverged (NaN/inf)."""
  runs, settings, first_seed = _logged(results)
  fig, axes = plotting.subplots(2, (11, 4))
  for r in runs:
    style = _style(r, settings, first_seed)
    steps = [row["step"] for row in r.steps]
    plotting.curve(axes[0], steps, r.losses, style, log=True, diverged=r.diverged)
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


def neuron_norms(stat: str):
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
