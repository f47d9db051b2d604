"""E1: its design, and its tables, reading and figures from fabricated runs."""

import pytest

from experiments.claims import e1_max_norm_vs_none as e1
from experiments.claims.budgets import BUDGETS
from experiments.claims.e1_max_norm_vs_none import EXPERIMENT as E1
from experiments.claims.report import read_sections, render_report
from experiments.claims.results import dense_name

PNG = b"\x89PNG\r\n\x1a\n"
PROXY = BUDGETS["cpu-proxy"]
DENSE = dense_name(PROXY.config("regular"))  # Dense(256) at the time of writing.


@pytest.mark.parametrize("budget, seeds", [("cpu", 3), ("cpu-proxy", 5), ("full", 3)])
def test_each_seed_trains_without_then_with_max_norm_3_on_the_dense_layer(budget, seeds):
  runs = E1.runs(BUDGETS[budget])
  assert len(runs) == 2 * seeds
  for seed, (without, with_) in enumerate(zip(runs[::2], runs[1::2])):  # Pairs first.
    assert without.config.max_norm is None and without.config.seed == seed
    assert (with_.config.max_norm, with_.config.constrain) == (3.0, "dense1")
    assert with_.config.seed == seed
    assert without.config == BUDGETS[budget].config("regular", max_norm=None, seed=seed)
  width = BUDGETS[budget].config("regular").dense_features
  assert runs[1].labels["variant"] == f"max_norm(3), Dense({width})"


@pytest.fixture
def e1_runs(tmp_path, fabricate, results_of):
  """``e1_runs(effect, noise, bound)``: E1's cpu-proxy runs over 3 epochs; the constrained
  arm's accuracies are ``effect`` higher, plus ``noise`` times -1/+1 by seed, and its
  fraction at bound is ``bound`` per epoch (its norm then stays at 3)."""
  def make(effect=0.02, noise=0.002, bound=(0.0, 0.3, 0.6), train=(1.0, 0.95)):
    for r in results_of(E1, PROXY, tmp_path / "runs"):
      seed = r.spec.labels["seed"]
      if r.constrained:
        shift = effect + noise * (-1) ** seed
        fabricate(r.workdir, r.spec, val=0.5 + 0.01 * seed + shift,
                  test=0.49 + 0.01 * seed + shift, train=train[1], epochs=3, bound=bound,
                  dense_max=[1.5, 3.0, 3.0] if any(bound) else [1.5, 2.0, 2.5])
      else:
        fabricate(r.workdir, r.spec, val=0.5 + 0.01 * seed, test=0.49 + 0.01 * seed,
                  train=train[0], epochs=3, dense_max=[1.5, 3.2, 5.4])
    return results_of(E1, PROXY, tmp_path / "runs")
  return make


def test_report_has_the_tables_and_the_figures(tmp_path, e1_runs):
  results = e1_runs()
  path = render_report(E1, PROXY, results, tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert "| none | cpu-proxy | 5 | 0.520 ± 0.016 | 0.510 ± 0.016 | 1.000 ± 0.000 |" in section
  assert f"| max_norm(3), {DENSE} | cpu-proxy | 5 | 0.540 ± 0.016 |" in section
  assert "| test accuracy | 5 | 0.510 ± 0.016 | 0.530 ± 0.016 | +0.020 [+0.018, +0.023] | no |" in (
      section)
  assert f"{DENSE} max norm" in section and "Dense(1024)" not in section
  for name in ("accuracy_by_seed", "final_neuron_norms", "constraint_acted"):
    assert f"![{name}](cpu-proxy_{name}.png)" in section
    assert (path.parent / f"cpu-proxy_{name}.png").read_bytes()[:8] == PNG
  assert E1.reading(results) in section


def test_the_arms_are_compared_seed_by_seed(e1_runs):
  results = e1_runs()
  assert [(a.spec.labels["seed"], a.constrained, b.constrained) for a, b in e1.pairs(results)] == [
      (seed, False, True) for seed in range(5)]
  d = e1.differences(results)
  # Paired differences 0.022, 0.018, 0.022, 0.018, 0.022: mean 0.0204, sd 0.00219, and
  # t(0.975, 4) = 2.776, so the interval is 0.0204 ± 0.0027.
  test = d["test accuracy"]
  assert (test.n, test.mean, test.low, test.high) == pytest.approx(
      (5, 0.0204, 0.0177, 0.0231), abs=5e-5)
  assert not test.contains_zero
  # The gap: train accuracy 0.95 against 1.0, minus the accuracy gain.
  assert d["train − val gap"].mean == pytest.approx(-0.0704) and d["train − val gap"].high < 0
  reading = E1.reading(results)
  assert "+0.0204, 95% interval [+0.0177, +0.0231] over 5 seed pairs" in reading
  assert "-0.0704" in reading


def test_the_reading_counts_the_epochs_where_the_constraint_bound(e1_runs):
  results = e1_runs()
  constrained = [r for r in results if r.constrained]
  assert [r.bound_epochs for r in constrained] == [[2, 3]] * 5 and all(r.bound for r in constrained)
  assert {r.final_norm() for r in results if not r.constrained} == {5.4}  # Above c = 3.
  reading = E1.reading(results)
  assert "fraction at bound > 0 in 10 of 15 epochs of the 5 constrained runs" in reading
  assert "first at epoch 2" in reading and "fraction at bound 0.600 ± 0.000" in reading
  assert "ended at 5.40 ± 0.00 (above c = 3 in 5 of 5 runs)" in reading
  assert "1.000 ± 0.000 against validation accuracy 0.520 ± 0.016" in reading


def test_an_interval_that_contains_0_reads_as_no_effect(e1_runs):
  results = e1_runs(effect=0.0, noise=0.01, train=(1.0, 1.0))
  # Differences ±0.01 by seed: mean 0.002, sd 0.01095, interval 0.002 ± 0.0136.
  test = e1.differences(results)["test accuracy"]
  assert (test.mean, test.low, test.high) == pytest.approx((0.002, -0.0116, 0.0156), abs=5e-5)
  assert test.contains_zero
  reading = E1.reading(results)
  assert "+0.0020, 95% interval [-0.0116, +0.0156]" in reading and "excludes" not in reading


def test_a_constraint_that_never_bound_is_named_as_such(e1_runs):
  results = e1_runs(effect=0.0, noise=0.0, bound=(0.0, 0.0, 0.0))
  assert not any(r.bound for r in results)
  reading = E1.reading(results)
  assert "- The constraint never bound" in reading and "The constraint acted" not in reading
  assert "seeds with bit-identical validation and test loss in both arms: [0, 1, 2, 3, 4]" in (
      reading)


def test_fewer_than_two_pairs_is_no_comparison(tmp_path, fabricate, results_of):
  runs = results_of(E1, PROXY, tmp_path / "runs")
  for r in runs[:3]:  # Seed 0's pair and seed 1 without the constraint.
    fabricate(r.workdir, r.spec, val=0.5, test=0.5)
  results = results_of(E1, PROXY, tmp_path / "runs")
  assert len(e1.pairs(results)) == 1 and set(e1.differences(results).values()) == {None}
  assert E1.reading(results) == (
      "- Fewer than 2 complete pairs (same seed, both arms): no comparison yet.")
