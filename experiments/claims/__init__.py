"""Experiments that test the article's two claims about max-norm on CIFAR-10.

One command per experiment, e.g.
``python -m experiments.claims e1 --budget cpu --data-dir D``:

* ``e1``: the article's recipe with ``max_norm(3)`` on Dense(1024) against no
  constraint, over several seeds (does max-norm regularise?);
* ``e2``: ``c`` in {1, 2, 3, 4, inf}, on Dense(1024) only or on every kernel;
* ``e3``: Adam at 10-100x the article's learning rate and SGD with momentum at
  a high rate, each with and without max-norm, logged step by step (does
  max-norm keep the weights from exploding?).

Modules: :mod:`.budgets` (named compute budgets), :mod:`.specs` (which runs
each experiment makes), :mod:`.sweep` (runs them, skipping complete ones and
resuming partial ones), :mod:`.report` (tables and ``results.md``) and
:mod:`.plots` (the figures).
"""

from experiments.claims.budgets import BUDGETS, Budget
from experiments.claims.specs import EXPERIMENTS, Experiment, RunSpec
from experiments.claims.sweep import RunConflictError, run_sweep

__all__ = [
    "BUDGETS", "EXPERIMENTS", "Budget", "Experiment", "RunConflictError", "RunSpec", "run_sweep",
]
