"""The figures of the reports (matplotlib, Agg backend: no display needed).

Each function takes :class:`~experiments.claims.results.RunResult` objects
and a PNG path, draws only complete runs (E3 also draws a diverged run up to
its last logged step), and returns the path.
"""

from __future__ import annotations

import math
import pathlib
import statistics
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from experiments.claims.results import RunResult  # noqa: E402

__all__ = ["e1_accuracy_by_seed", "e1_final_norms", "e2_accuracy_vs_c", "e3_curves",
           "e3_neuron_norms"]

LAYERS = ("conv1/kernel", "conv2/kernel", "conv3/kernel", "dense1/kernel", "dense2/kernel")


def _suptitle(fig, text: str) -> None:
  """A figure title wrapped to the figure's width, so it never runs over the panels."""
  width = max(40, int(fig.get_figwidth() * 14))  # characters of 9-point text per line
  lines = [textwrap.fill(line, width) for line in text.split("\n")]
  fig.suptitle("\n".join(lines), fontsize=9)


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _complete(results: Sequence[RunResult]) -> list[RunResult]:
  return [r for r in results if r.complete]


def e1_accuracy_by_seed(results: Sequence[RunResult], path, budget_label: str) -> pathlib.Path:
  """Validation and test accuracy of every seed, per variant, with mean +- std."""
  runs = _complete(results)
  variants = list(dict.fromkeys(r.spec.labels["variant"] for r in results))
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, layout="constrained")
  for ax, key, title in zip(axes, ("val_accuracy", "test_accuracy"), ("validation", "test")):
    for x, variant in enumerate(variants):
      values = [r.summary[key] for r in runs if r.spec.labels["variant"] == variant
                and r.summary.get(key) is not None]
      ax.scatter([x] * len(values), values, color=f"C{x}", alpha=0.7, zorder=3)
      if values:
        mean = sum(values) / len(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        ax.errorbar([x + 0.15], [mean], yerr=[std], fmt="s", color="black", capsize=4,
                    zorder=4)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_xlim(-0.5, len(variants) - 0.5)
    ax.set_title(f"{title} accuracy")
    ax.grid(axis="y", alpha=0.3)
  axes[0].set_ylabel("accuracy (dots: seeds; square: mean ± std)")
  _suptitle(fig, f"E1 | budget: {budget_label}")
  return _save(fig, path)


def e1_final_norms(results: Sequence[RunResult], path, budget_label: str) -> pathlib.Path:
  """Largest and mean neuron norm of each layer at the end, per variant (mean over seeds)."""
  runs = _complete(results)
  variants = list(dict.fromkeys(r.spec.labels["variant"] for r in results))
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
  width = 0.8 / max(len(variants), 1)
  for ax, stat in zip(axes, ("max", "mean")):
    for v, variant in enumerate(variants):
      rows = [r.last_epoch.get("neuron_norms", {}) for r in runs
              if r.spec.labels["variant"] == variant]
      heights = []
      for layer in LAYERS:
        values = [row[layer][stat] for row in rows
                  if layer in row and row[layer][stat] is not None]
        heights.append(sum(values) / len(values) if values else float("nan"))
      ax.bar([i + v * width for i in range(len(LAYERS))], heights, width, label=variant)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(LAYERS))],
                  [layer.split("/")[0] for layer in LAYERS])
    ax.set_title(f"{stat} neuron norm after training")
    ax.grid(axis="y", alpha=0.3)
  axes[0].axhline(3.0, color="gray", linestyle=":", linewidth=1, label="c = 3")
  axes[0].legend(fontsize=8)
  _suptitle(fig, f"E1 | budget: {budget_label}")
  return _save(fig, path)


def e2_accuracy_vs_c(results: Sequence[RunResult], path, budget_label: str) -> pathlib.Path:
  """Test and validation accuracy against c, for Dense(1024) only and every kernel."""
  runs = _complete(results)
  cs = sorted({r.spec.labels["c"] for r in results})
  xs = {c: i for i, c in enumerate(cs)}
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, layout="constrained")
  for ax, key, title in zip(axes, ("val_accuracy", "test_accuracy"), ("validation", "test")):
    for k, placement in enumerate(("dense1", "all")):
      points = sorted((r.spec.labels["c"], r.summary[key]) for r in runs
                      if r.spec.labels["placement"] in (placement, "none")
                      and r.summary.get(key) is not None)
      if points:
        ax.plot([xs[c] for c, _ in points], [a for _, a in points], "o-", color=f"C{k}",
                label="Dense(1024) only" if placement == "dense1" else "every kernel")
    ax.set_xticks(range(len(cs)), ["∞" if math.isinf(c) else f"{c:g}" for c in cs])
    ax.set_xlabel("max-norm bound c (∞: no constraint)")
    ax.set_title(f"{title} accuracy")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy")
  axes[0].legend(fontsize=8)
  _suptitle(fig, f"E2 | budget: {budget_label}")
  return _save(fig, path)


def _e3_style(result: RunResult, settings: list[tuple[str, float]],
              results: Sequence[RunResult]) -> dict:
  labels = result.spec.labels
  color = f"C{settings.index((labels['optimizer'], labels['lr']))}"
  linestyle, suffix = _E3_LINES.get(labels["constraint"], ("-.", f" + {labels['constraint']}"))
  first_seed = labels["seed"] == min(r.spec.labels["seed"] for r in results)
  return dict(color=color, linestyle=linestyle,  # One legend entry per setting, not per seed.
              label=f"{labels['optimizer']} {labels['lr']:g}{suffix}" if first_seed else None)


# E3's constraint label -> (line style, legend suffix).
_E3_LINES = {"none": ("-", ""), "max_norm(3), Dense(1024)": ("--", " + max-norm Dense(1024)"),
             "max_norm(3), every kernel": (":", " + max-norm all")}


def _settings(results: Sequence[RunResult]) -> list[tuple[str, float]]:
  return list(dict.fromkeys((r.spec.labels["optimizer"], r.spec.labels["lr"]) for r in results))


def _curve(ax, result: RunResult, xs, ys, style: dict, log: bool) -> None:
  pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and (y > 0 or not log)]
  if not pairs:
    return
  ax.plot([p[0] for p in pairs], [p[1] for p in pairs], **style)
  if result.diverged:  # Mark where the loss became NaN/inf.
    ax.plot([pairs[-1][0]], [pairs[-1][1]], "x", color=style["color"], markersize=9)


def e3_curves(results: Sequence[RunResult], path, budget_label: str) -> pathlib.Path:
  """Batch loss and accuracy over steps; dashed: with max-norm; x: diverged (NaN/inf)."""
  settings = _settings(results)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
  for r in results:
    if not r.steps:
      continue
    style = _e3_style(r, settings, results)
    steps = [row["step"] for row in r.steps]
    _curve(axes[0], r, steps, [row["loss"] for row in r.steps], style, log=True)
    _curve(axes[1], r, steps, [row["accuracy"] for row in r.steps], {**style, "label": None},
           log=False)
  axes[0].set_yscale("log")
  axes[0].set_title("training batch loss (log scale)")
  axes[1].set_title("training batch accuracy")
  for ax in axes:
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
  axes[0].axhline(math.log(10), color="gray", linewidth=0.8)
  axes[0].legend(fontsize=7, ncol=2)
  _suptitle(fig, f"E3 | budget: {budget_label}\nsolid: no constraint; dashed: max_norm(3) on "
               f"Dense(1024); dotted: on every kernel; x: loss became NaN/inf; grey: ln 10 "
               f"(chance)")
  return _save(fig, path)


def e3_neuron_norms(results: Sequence[RunResult], path, budget_label: str, stat: str = "max"
                    ) -> pathlib.Path:
  """The largest (``stat="max"``) or mean neuron norm of each layer over steps."""
  if stat not in ("max", "mean"):
    raise ValueError(f"stat must be 'max' or 'mean', got {stat!r}.")
  settings = _settings(results)
  fig, axes = plt.subplots(1, len(LAYERS), figsize=(16, 3.6), layout="constrained")
  for r in results:
    if not r.steps:
      continue
    style = _e3_style(r, settings, results)
    steps = [row["step"] for row in r.steps]
    for ax, layer in zip(axes, LAYERS):
      values = [row["neuron_norms"].get(layer, {}).get(stat) for row in r.steps]
      _curve(ax, r, steps, values, style, log=True)
  for ax, layer in zip(axes, LAYERS):
    ax.set_yscale("log")
    ax.set_title(layer.split("/")[0])
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
  for ax in axes:
    ax.axhline(3.0, color="gray", linewidth=0.8)
  axes[0].set_ylabel(f"{stat} neuron norm (log scale)")
  axes[0].legend(fontsize=6)
  _suptitle(fig, f"E3 | budget: {budget_label}\n{stat} incoming-weight norm per layer; solid: "
               f"no constraint; dashed: max_norm(3) on Dense(1024); dotted: on every kernel; "
               f"grey: c = 3")
  return _save(fig, path)

