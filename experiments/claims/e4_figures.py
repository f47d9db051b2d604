"""E4's figures, drawn from what :mod:`.e4_dropout_max_norm` computes: test accuracy
against the learning rate, and the fraction of neurons at the bound per epoch, one
panel per optimizer.

One colour per arm (dropout x max-norm) in the first, one colour per learning
rate in the second (line style: dropout and bound); an x marks a failed run
(NaN/inf, or stuck at chance).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from experiments import plotting

__all__ = ["BoundCurve", "Line", "Panel", "accuracy_vs_lr", "fraction_at_bound"]

class Line(NamedTuple):
  """One arm: per learning rate, the mean test accuracy over seeds and each seed's
  (accuracy, failed)."""
  label: str
  points: list[tuple[float, float | None, list[tuple[float, bool]]]]


class BoundCurve(NamedTuple):
  """The mean fraction at the bound per epoch of one constrained (lr, dropout, c) cell;
  ``rate_index``: the rate's place in its optimizer's sweep (its colour)."""
  rate_index: int
  dropout: float
  c: float
  lr: float
  fractions: list[float | None]


class Panel(NamedTuple):
  """One optimizer's panel: its :class:`Line` or :class:`BoundCurve` items."""
  title: str
  items: Sequence[Any]


def accuracy_vs_lr(panels: Sequence[Panel], path: pathlib.Path, label: str
                   ) -> pathlib.Path:
  """Test accuracy against the learning rate per arm: the mean over seeds (line) and each
  seed (dot); x: a failed run."""
  fig, axes = plotting.subplots(len(panels), (5.5 * len(panels), 4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for i, line in enumerate(panel.items):
      color = f"C{i % 10}"
      plotting.curve(ax, [lr for lr, _, _ in line.points], [m for _, m, _ in line.points],
                     dict(color=color, label=line.label))
      for lr, _, seeds in line.points:
        for acc, failed in seeds:
          ax.plot([lr], [acc], "x" if failed else ".", color=color, markersize=6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test accuracy")
    ax.set_title(panel.title)
    plotting.legend(ax, fontsize=7)
  return plotting.save(fig, path, f"{label}\nx: a failed run (NaN/inf, or stuck at chance)")


# (dropout on, the largest bound?) -> line style.
_STYLES = {(False, True): "-", (True, True): "--", (False, False): ":", (True, False): "-."}


def fraction_at_bound(panels: Sequence[Panel], path: pathlib.Path, label: str
                      ) -> pathlib.Path:
  """The fraction of constrained neurons at the bound per epoch, mean over seeds, per
  learning rate (colour), dropout and bound (line style)."""
  fig, axes = plotting.subplots(len(panels), (5.5 * len(panels), 4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    largest = max((k.c for k in panel.items), default=None)
    for k in panel.items:
      style = _STYLES[bool(k.dropout), k.c == largest]
      plotting.curve(ax, list(range(1, len(k.fractions) + 1)), k.fractions,
                     dict(color=f"C{k.rate_index % 10}", linestyle=style,
                          label=f"lr {k.lr:g}, c {k.c:g}"
                          + (f", dropout {k.dropout:g}" if k.dropout else "")))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of neurons at the bound")
    ax.set_title(panel.title)
    plotting.legend(ax, fontsize=6)
  return plotting.save(fig, path, f"{label}\nmax-norm on every kernel; solid/dashed: the "
                                  f"largest bound without/with dropout, dotted/dash-dot: a "
                                  f"smaller bound without/with dropout")
