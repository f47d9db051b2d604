"""The arms of an experiment: their names, and one arm against a baseline arm.

An arm is a constraint setting (``max_norm`` and where it applies) run over
seeds; the baseline is the arm without a constraint. Runs of two arms pair by
seed (same initialisation and batch order), so an arm is compared with the
baseline by the mean of the per-seed differences (:func:`compare`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from experiments.claims.results import RunResult
from experiments.claims.stats import PairedDifference, paired_difference

__all__ = ["DENSE_ONLY", "EVERY_KERNEL", "NONE", "PLACEMENTS", "Arm", "C", "arm_label", "arm_of",
           "bound_text", "compare", "paired", "where"]

PLACEMENTS = ("dense1", "all")  # Config.constrain values: the dense layer only, every kernel.
C = 3.0  # The article's bound.

Arm = tuple[float | None, str]  # (max_norm, constrain); max_norm None: no constraint.
NONE: Arm = (None, "dense1")
DENSE_ONLY: Arm = (C, "dense1")  # The article's placement.
EVERY_KERNEL: Arm = (C, "all")  # The Dropout paper's.


def arm_of(r: RunResult) -> Arm:
  """The run's arm (:data:`NONE` for every run without a constraint)."""
  return (r.spec.config.max_norm, r.spec.config.constrain) if r.constrained else NONE


def where(constrain: str, dense: str) -> str:
  """What a placement constrains, in words: ``dense`` (the dense layer's name) or
  ``every kernel``; "–" for anything else (no constraint)."""
  return {"dense1": dense, "all": "every kernel"}.get(constrain, "–")


def arm_label(max_norm: float | None, constrain: str, dense: str) -> str:
  """``none``, ``max_norm(3), Dense(256)`` or ``max_norm(3), every kernel``."""
  return "none" if max_norm is None else f"max_norm({max_norm:g}), {where(constrain, dense)}"


def bound_text(c: float | None) -> str:
  """A max-norm bound for a table: ``3``, ``1.5``, or ``∞`` (no constraint)."""
  return "∞" if c is None or math.isinf(c) else f"{c:g}"


def paired(baseline: Sequence[RunResult], arm: Sequence[RunResult]
           ) -> list[tuple[RunResult, RunResult]]:
  """(baseline, arm) pairs of complete runs of the same seed, by seed."""
  def by_seed(runs: Sequence[RunResult]) -> dict[int, RunResult]:
    return {r.spec.labels["seed"]: r for r in runs if r.complete}
  base, other = by_seed(baseline), by_seed(arm)
  return [(base[seed], other[seed]) for seed in sorted(base.keys() & other.keys())]


def compare(baseline: Sequence[RunResult], arm: Sequence[RunResult],
            value: Callable[[RunResult], float | None]) -> PairedDifference | None:
  """``value`` of ``arm`` minus that of ``baseline``, paired by seed, with its 95% t
  interval (None with fewer than 2 pairs where both values are present)."""
  values = [(value(a), value(b)) for a, b in paired(baseline, arm)]
  return paired_difference([(a, b) for a, b in values if a is not None and b is not None])
