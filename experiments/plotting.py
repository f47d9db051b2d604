"""What every figure of a results page shares: a row of panels, the title, saving, a curve.

Figures are :class:`matplotlib.figure.Figure` objects drawn straight to PNG
(no pyplot, so no backend or display is ever chosen); the experiments' own
figures live in their modules and draw through :func:`subplots` and
:func:`save`.
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["curve", "legend", "save", "subplots"]


def subplots(ncols: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
  """A figure of ``ncols`` panels side by side, with a constrained layout (as
  ``pyplot.subplots(1, ncols, ...)``)."""
  fig = Figure(figsize=figsize, layout="constrained")
  return fig, fig.subplots(1, ncols, **kwargs)


def save(fig: Figure, path: str | pathlib.Path, title: str) -> pathlib.Path:
  """Titles ``fig`` (wrapped to its width, so it never runs over the panels) and writes it
  as a PNG to ``path``."""
  width = max(40, int(fig.get_figwidth() * 14))  # Characters of 9-point text per line.
  fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")),
               fontsize=9)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def curve(ax: Any, xs: Sequence[float], ys: Sequence[float | None], style: dict[str, Any], *,
          log: bool = False, diverged: bool = False) -> None:
  """Plots the points whose y is present (and positive, on a log axis); ``diverged`` marks
  the last one with an x (where the loss became NaN/inf)."""
  pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and (y > 0 or not log)]
  if not pairs:
    return
  ax.plot([p[0] for p in pairs], [p[1] for p in pairs], **style)
  if diverged:
    ax.plot([pairs[-1][0]], [pairs[-1][1]], "x", color=style.get("color"), markersize=9)


def legend(ax: Any, **kwargs: Any) -> None:
  """``ax.legend(**kwargs)`` if something on ``ax`` has a label (a partial sweep may have
  drawn nothing labelled yet)."""
  if ax.get_legend_handles_labels()[0]:
    ax.legend(**kwargs)
