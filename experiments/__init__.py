"""Experiments built on :mod:`maxnorm_jax` (not part of the installed library).

* :mod:`experiments.cifar10` -- the article's CNN trained end to end on CIFAR-10:
  ``python -m experiments.cifar10 --preset article --workdir W``.
* :mod:`experiments.claims` -- experiments that test the article's claims, one
  resumable sweep per experiment, each writing ``experiments/results/<name>/``:
  ``python -m experiments.claims e1 --budget cpu-proxy``.
* :mod:`experiments.allocator` -- runs both commands on tcmalloc (XLA:CPU's
  per-step memory stays mapped).

Shared by the results pages and the benchmarks: :mod:`experiments.markdown`
(numbers and tables), :mod:`experiments.plotting` (figures) and
:mod:`experiments.machine` (the hardware a figure was measured on).
"""
