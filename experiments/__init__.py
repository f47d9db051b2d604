"""Experiments built on :mod:`maxnorm_jax` (not part of the installed library).

* :mod:`experiments.cifar10` -- the article's CNN trained end to end on CIFAR-10:
  ``python -m experiments.cifar10 --preset article --workdir W --data-dir D``.
"""
