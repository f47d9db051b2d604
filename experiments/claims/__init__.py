"""Experiments that test the article's two claims about max-norm on CIFAR-10.

One command per experiment, e.g.
``python -m experiments.claims e1 --budget cpu-proxy --data-dir D``:

* ``e1``: the recipe with ``max_norm(3)`` on the hidden dense layer against
  no constraint, paired by seed (does max-norm regularise?);
* ``e2``: the bound ``c`` from 1 to ∞, on the dense layer only or on every
  kernel;
* ``e3``: Adam at 10-100x the article's learning rate and SGD with momentum
  at high rates, each with and without max-norm, step by step (does max-norm
  keep the weights from exploding?).

One module per experiment holds its design (runs and seeds per budget), its
tables, its reading, its figures and its claim text:
:mod:`.e1_max_norm_vs_none`, :mod:`.e2_c_and_placement`,
:mod:`.e3_high_learning_rate` (its figures in :mod:`.e3_figures`);
:mod:`.registry` lists them. Shared by all:
:mod:`.budgets` (named compute budgets and their two schedules),
:mod:`.runs` (a run's name and config), :mod:`.experiment` (what an
experiment provides), :mod:`.sweep` (trains the runs, skipping complete ones
and resuming partial ones), :mod:`.host` and :mod:`.results` (reading runs
back), :mod:`.arms` (arm names; one arm against the baseline, paired by
seed), :mod:`.columns` (the quantities the tables show), :mod:`.report`
(sections of ``results.md``, merged per budget), :mod:`.stats` (t intervals
and Fisher's exact test), :mod:`.cli` (the command).
"""

# Nothing is imported here: `python -m experiments.claims` imports this package
# before its __main__, which must choose the malloc before JAX is loaded.
