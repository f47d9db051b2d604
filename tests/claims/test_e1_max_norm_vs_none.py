"""E1: its design, and its tables, reading and figures from fabricated runs."""

import pytest

from experiments.claims import BUDGETS
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


def test_report_has_the_tables_the_figures_and_a_computed_reading(tmp_path, e1_runs):
  path = render_report(E1, PROXY, e1_runs(), tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert "| none | cpu-proxy | 5 | 0.520 ± 0.016 | 0.510 ± 0.016 | 1.000 ± 0.000 |" in section
  assert f"| max_norm(3), {DENSE} | cpu-proxy | 5 | 0.540 ± 0.016 |" in section
  # Paired differences 0.022, 0.018, 0.022, 0.018, 0.022: mean 0.0204, sd 0.00219, and
  # t(0.975, 4) = 2.776, so the interval is 0.0204 ± 0.0027.
  assert "| test accuracy | 5 | 0.510 ± 0.016 | 0.530 ± 0.016 | +0.020 [+0.018, +0.023] | no |" in (
      section)
  assert f"{DENSE} max norm" in section and "Dense(1024)" not in section
  for name in ("accuracy_by_seed", "final_neuron_norms", "constraint_acted"):
    assert f"![{name}](cpu-proxy_{name}.png)" in section
    assert (path.parent / f"cpu-proxy_{name}.png").read_bytes()[:8] == PNG
  assert ("- The constraint acted: fraction at bound > 0 in 10 of 15 epochs of the 5 "
          "constrained runs (5 runs bound at some epoch, first at epoch 2); in the last epoch, "
          "fraction at bound 0.600 ± 0.000.") in section
  assert (f"- Without the constraint, {DENSE}'s largest neuron norm ended at 5.40 ± 0.00 "
          "(above c = 3 in 5 of 5 runs).") in section
  assert ("- Without the constraint, train accuracy (the last epoch's running mean) was "
          "1.000 ± 0.000 against validation accuracy 0.520 ± 0.016: a train − val gap of "
          "0.480 ± 0.016.") in section
  assert ("- test accuracy, with minus without: +0.0204, 95% interval [+0.0177, +0.0231] over "
          "5 seed pairs (t, 4 degrees of freedom); the interval excludes 0: higher with the "
          "constraint.") in section
  assert "- train − val gap, with minus without: -0.0704" in section
  assert "lower with the constraint." in section


def test_an_interval_that_contains_0_reads_as_no_effect(e1_runs):
  reading = E1.reading(e1_runs(effect=0.0, noise=0.01, train=(1.0, 1.0)))
  # Differences ±0.01 by seed: mean 0.002, sd 0.01095, interval 0.002 ± 0.0136.
  assert ("- test accuracy, with minus without: +0.0020, 95% interval [-0.0116, +0.0156] over "
          "5 seed pairs (t, 4 degrees of freedom); the interval contains 0: no effect "
          "distinguishable from noise.") in reading
  assert "excludes" not in reading


def test_a_constraint_that_never_bound_is_named_as_such(e1_runs):
  reading = E1.reading(e1_runs(effect=0.0, noise=0.0, bound=(0.0, 0.0, 0.0)))
  assert "- The constraint never bound (fraction at bound 0 in every epoch" in reading
  assert "seeds with bit-identical validation and test loss in both arms: [0, 1, 2, 3, 4]" in (
      reading)
  assert "The constraint acted" not in reading


def test_fewer_than_two_pairs_is_no_comparison(tmp_path, fabricate, results_of):
  runs = results_of(E1, PROXY, tmp_path / "runs")
  for r in runs[:3]:  # Seed 0's pair and seed 1 without the constraint.
    fabricate(r.workdir, r.spec, val=0.5, test=0.5)
  assert E1.reading(results_of(E1, PROXY, tmp_path / "runs")) == (
      "- Fewer than 2 complete pairs (same seed, both arms): no comparison yet.")
