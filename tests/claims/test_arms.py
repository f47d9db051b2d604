"""Arm names, and one arm against the baseline arm, paired by seed."""

import math

import pytest

from experiments.claims.arms import arm_label, bound_text, compare, paired, where
from experiments.claims.budgets import BUDGETS
from experiments.claims.registry import EXPERIMENTS

E2 = EXPERIMENTS["e2"]


def test_arms_are_named_by_bound_and_placement():
  assert arm_label(None, "dense1", "Dense(256)") == "none"
  assert arm_label(3.0, "dense1", "Dense(256)") == "max_norm(3), Dense(256)"
  assert arm_label(1.5, "all", "Dense(256)") == "max_norm(1.5), every kernel"
  assert (where("dense1", "D"), where("all", "D"), where("none", "D")) == ("D", "every kernel", "–")
  assert (bound_text(3.0), bound_text(math.inf), bound_text(None)) == ("3", "∞", "∞")


@pytest.fixture
def e2_results(tmp_path, fabricate, results_of):
  """E2's cpu-proxy runs: test accuracy 0.5 + 0.01 seed, 0.02 lower at c = 1 on every
  kernel; seed 2 of that setting is not complete."""
  proxy = BUDGETS["cpu-proxy"]
  for r in results_of(E2, proxy, tmp_path / "runs"):
    setting = (r.spec.labels["c"], r.spec.labels["placement"])
    seed = r.spec.labels["seed"]
    if setting == (1.0, "all") and seed == 2:
      continue
    fabricate(r.workdir, r.spec, val=0.5, test=0.5 + 0.01 * seed - 0.02 * (setting == (1.0, "all")))
  return results_of(E2, proxy, tmp_path / "runs")


def test_an_arm_pairs_with_the_baseline_by_seed_over_complete_runs(e2_results):
  free = [r for r in e2_results if not r.constrained]
  arm = [r for r in e2_results if (r.spec.labels["c"], r.spec.labels["placement"]) == (1.0, "all")]
  pairs = paired(free, list(reversed(arm)))
  assert [(a.spec.labels["seed"], b.spec.labels["seed"]) for a, b in pairs] == [(0, 0), (1, 1)]
  assert all(not a.constrained and b.constrained for a, b in pairs)
  d = compare(free, arm, lambda r: r.get("test_accuracy"))
  assert (d.n, d.mean, d.std) == (2, pytest.approx(-0.02), pytest.approx(0, abs=1e-12))
  assert compare(free, arm[:1], lambda r: r.get("test_accuracy")) is None  # One pair.
  assert compare(free, arm, lambda r: None) is None  # No values.
