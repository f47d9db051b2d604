"""What every figure shares: the Agg backend, the title, saving, one curve.

The experiments' own figures live in their modules; they draw through
:func:`subplots` and :func:`save`, so no display is ever needed.
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

__all__ = ["curve", "legend", "save", "subplots"]


def subplots(ncols: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
  """``plt.subplots(1, ncols, ...)`` with a constrained layout."""
  return plt.subplots(1, ncols, figsize=figsize, layout="constrained", **kwargs)


def save(fig: Any, path: str | pathlib.Path, title: str) -> pathlib.Path:
  """Titles ``fig`` (wrapped to its width, so it never runs over the panels), writes it
  as a PNG to ``path`` and closes it."""
  width = max(40, int(fig.get_figwidth() * 14))  # Characters of 9-point text per line.
  fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")),
               fontsize=9)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
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
