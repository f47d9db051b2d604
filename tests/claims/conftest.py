"""Fixtures of the claims tests: a tiny budget, and the files a finished run leaves."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from experiments.cifar10 import records
from experiments.claims.budgets import Budget
from experiments.claims.results import LAYERS, load_result
from experiments.claims.sweep import workdir_of


@pytest.fixture
def tiny_budget(tiny):
  """A budget of one epoch of the tiny network (``tiny``), for sweeps on the mock data:
  8 steps per run; the short schedule logs every step."""
  return Budget(name="tiny", regular=dict(epochs=1, learning_rate=1e-4, **tiny),
                short=dict(epochs=1, log_every=1, **tiny))


def _norms(dense1_max: float | None, dense1_mean: float | None = 1.0, other: float = 1.5
          ) -> dict[str, dict[str, float | None]]:
  """Per-layer neuron-norm stats as the pipeline writes them."""
  return {layer: ({"max": dense1_max, "mean": dense1_mean} if layer == "dense1/kernel"
                  else {"max": other, "mean": 1.0}) for layer in LAYERS}


@pytest.fixture
def fabricate() -> Callable[..., None]:
  """``fabricate(workdir, spec, *, val, test, ...)`` writes the files of a finished run.

  Keyword arguments: ``val``/``test`` (final accuracies), ``train`` (the last epoch's
  train accuracy; default ``val + 0.05``), ``epochs`` (rows of ``metrics.jsonl``),
  ``bound`` (fraction at bound of every epoch, or one per epoch; constrained runs only),
  ``dense_max`` (the dense layer's largest norm after each epoch: a number or a list),
  ``steps`` (rows of ``steps.jsonl``), ``diverged_at`` and ``steps_run`` (the summary's
  ``steps``), ``seconds`` (``total_seconds``), ``host`` (a ``host.json``).
  """
  def write(workdir, spec, *, val: float, test: float, train: float | None = None,
            epochs: int = 1, bound: float | Sequence[float] = 0.0,
            dense_max: float | Sequence[float] = 2.5, steps: Sequence[dict[str, Any]] = (),
            diverged_at: int | None = None, steps_run: int | None = None,
            seconds: float = 330.0, host: dict[str, Any] | None = None) -> None:
    workdir.mkdir(parents=True)
    records.write_config(workdir, spec.config)
    bounds = [bound] * epochs if isinstance(bound, (int, float)) else list(bound)
    maxima = [dense_max] * epochs if isinstance(dense_max, (int, float)) else list(dense_max)
    for epoch in range(1, epochs + 1):
      records.append_metrics(workdir, {
          "epoch": epoch, "step": 32 * epoch, "lr": 1e-4, "train_loss": 2.0,
          "train_accuracy": val + 0.05 if train is None else train,
          "val_loss": 1.9, "val_accuracy": val, "seconds": 300.0, "train_seconds": 280.0,
          "img_per_s": 14.6,
          "fraction_at_bound": None if spec.config.max_norm is None else bounds[epoch - 1],
          "largest_norm": None, "neuron_norms": _norms(maxima[epoch - 1])})
    for row in steps:
      records.append_step(workdir, row)
    records.write_summary(workdir, {
        "test_accuracy": test, "test_loss": 1.9, "val_accuracy": val, "val_loss": 1.9,
        "num_params": 88914698, "backend": "cpu", "device": "cpu", "num_devices": 1,
        "cpu_count": 2, "jax_version": "0.10.2",
        "steps": steps_run or diverged_at or 32 * epochs,
        "diverged": diverged_at is not None, "diverged_at_step": diverged_at,
        "total_seconds": seconds})
    if host is not None:
      (workdir / "host.json").write_text(json.dumps(host))
  return write


@pytest.fixture
def step_rows() -> Callable[..., list[dict[str, Any]]]:
  """``step_rows(n, loss, *, nan_at=None, dense1=2.0, chance=False)``: ``n`` step-log rows
  whose loss grows as ``loss * (1 + step)`` (or sits at ln 10 with ``chance``); the row of
  ``nan_at`` has a null loss and, as the pipeline writes an unlogged diverged step,
  ``"neuron_norms": null``."""
  def rows(n: int, loss: float, *, nan_at: int | None = None, dense1: float = 2.0,
           chance: bool = False) -> list[dict[str, Any]]:
    out = []
    for step in range(1, n + 1):
      value = math.log(10) if chance else loss * (1 + step)
      out.append({"step": step, "epoch": 1, "lr": 1e-2,
                  "loss": None if step == nan_at else value, "accuracy": 0.1,
                  "fraction_at_bound": None, "largest_norm": None,
                  "neuron_norms": None if step == nan_at else _norms(dense1 * step)})
    return out
  return rows


@pytest.fixture
def results_of():
  """``results_of(experiment, budget, runs_dir)``: every run of the plan, read from disk
  (fabricated runs may hold fewer epochs than their config: no sweep status is asked)."""
  def read(experiment, budget, runs_dir):
    return [load_result(spec, workdir_of(runs_dir, budget, experiment, spec))
            for spec in experiment.runs(budget)]
  return read
