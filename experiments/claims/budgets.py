"""Named compute budgets: how much training each experiment's runs get.

A budget is stated next to every number the experiments report, and one
results table never mixes two budgets. Two training schedules exist per
budget: ``regular`` for the regularisation experiments (E1, E2), and
``short`` with step-level logging for the learning-rate experiment (E3),
where divergence shows within a few steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["BUDGETS", "Budget", "get_budget"]


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much compute each run of an experiment gets.

  Attributes:
    name: the budget's name (also a directory level under the runs directory).
    description: what the ``regular`` schedule is, for the reports.
    short_description: what the ``short`` schedule is, for the reports.
    regular: Config overrides (on top of the ``article`` preset) for E1 and E2.
    short: Config overrides for E3 (should set ``log_every``).
    e1_seeds: seeds of E1 (each with and without the constraint).
    e2_seeds: seeds of E2.
    e3_seeds: seeds of E3.
  """

  name: str
  description: str
  short_description: str
  regular: dict[str, Any]
  short: dict[str, Any]
  e1_seeds: tuple[int, ...] = (0, 1, 2)
  e2_seeds: tuple[int, ...] = (0,)
  e3_seeds: tuple[int, ...] = (0,)

  def __post_init__(self):
    if not self.name or "/" in self.name:
      raise ValueError(f"A budget's name must be a non-empty directory name, got {self.name!r}.")
    for field in ("e1_seeds", "e2_seeds", "e3_seeds"):
      if not getattr(self, field):
        raise ValueError(f"Budget {self.name!r}: {field} must name at least one seed.")
    if not self.short.get("log_every"):
      raise ValueError(f"Budget {self.name!r}: the short schedule (E3) needs log_every >= 1, "
                       f"since E3 reports curves over steps.")


BUDGETS: dict[str, Budget] = {
    # Sized for this project's 2-core CPU, where one 128-image step of the
    # article's network took 2-13 s (2026-11-26), depending on what else ran.
    # The article's network and recipe, but 32 steps instead of 3,520.
    "cpu": Budget(
        name="cpu",
        description=("the article's network and recipe, 1 epoch on the first 4,096 training "
                     "images (32 steps of 128); validation and test on the first 1,000 images "
                     "each"),
        short_description=("the article's network, 1 epoch on the first 2,560 training images "
                           "(20 steps of 128), every step logged; validation and test on the "
                           "first 500 images each"),
        regular=dict(epochs=1, train_subset=4096, eval_subset=1000),
        short=dict(epochs=1, train_subset=2560, eval_subset=500, log_every=1),
        e3_seeds=(0, 1),
    ),
    # The article's budget, for a GPU/TPU: 10 epochs over 45,000 images
    # (3,520 steps), full validation and test sets.
    "full": Budget(
        name="full",
        description=("the article's network and recipe: 10 epochs over 45,000 training images "
                     "(3,520 steps of 128); validation on 5,000 and test on 10,000 images"),
        short_description=("the article's network, 1 epoch over 45,000 training images "
                           "(352 steps of 128), every 10th step logged; full validation and "
                           "test sets"),
        regular=dict(),
        short=dict(epochs=1, log_every=10),
    ),
}


def get_budget(name: str) -> Budget:
  """The budget called ``name``; a ValueError names the choices otherwise."""
  if name not in BUDGETS:
    raise ValueError(f"Unknown budget {name!r}; choose from {sorted(BUDGETS)}.")
  return BUDGETS[name]
