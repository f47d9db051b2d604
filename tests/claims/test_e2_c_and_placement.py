"""E2: its design, and its tables, reading and figure from fabricated runs."""

import math

import pytest

from experiments.claims import e2_c_and_placement as e2
from experiments.claims.budgets import BUDGETS
from experiments.claims.e2_c_and_placement import EXPERIMENT as E2
from experiments.claims.report import read_sections, render_report
from experiments.claims.results import dense_name

PNG = b"\x89PNG\r\n\x1a\n"
PROXY = BUDGETS["cpu-proxy"]
DENSE = dense_name(PROXY.config("regular"))  # Dense(256) at the time of writing.
TEST, GAP = (lambda r: r.get("test_accuracy")), (lambda r: r.train_val_gap)


@pytest.mark.parametrize("budget, cs, seeds", [
    ("cpu", (1.0, 2.0, 3.0, 4.0), (0,)),  # The grid of the committed cpu results.
    ("cpu-proxy", (1.0, 1.5, 2.0, 3.0, 4.0), (0, 1, 2)),
    ("full", (1.0, 1.5, 2.0, 3.0, 4.0), (0,)),
])
def test_each_seed_runs_no_constraint_then_every_c_on_both_placements(budget, cs, seeds):
  runs = E2.runs(BUDGETS[budget])
  assert len(runs) == len(seeds) * (1 + 2 * len(cs))
  per_seed = len(runs) // len(seeds)
  for i, seed in enumerate(seeds):
    block = runs[i * per_seed:(i + 1) * per_seed]
    assert {r.config.seed for r in block} == {seed}
    assert block[0].config.max_norm is None and math.isinf(block[0].labels["c"])
    assert [(r.config.max_norm, r.config.constrain) for r in block[1:]] == [
        (c, p) for c in cs for p in ("dense1", "all")]  # Smallest c first.


@pytest.fixture
def e2_runs(tmp_path, fabricate, results_of):
  """``e2_runs()``: E2's cpu-proxy runs, where c = 1 on every kernel costs 0.05 of test
  accuracy (± 0.002 by seed), c <= 2 binds, and nothing else changes."""
  def make():
    for r in results_of(E2, PROXY, tmp_path / "runs"):
      c, placement, seed = (r.spec.labels[k] for k in ("c", "placement", "seed"))
      drop = 0.05 + 0.002 * (-1) ** seed if (c, placement) == (1.0, "all") else 0.0
      wobble = 0.003 * (-1) ** (seed + int(2 * c)) if math.isfinite(c) else 0.0
      fabricate(r.workdir, r.spec, val=0.5 + 0.01 * seed, test=0.5 + 0.01 * seed - drop + wobble,
                train=1.0, bound=0.5 if c <= 2 else 0.0)
    return results_of(E2, PROXY, tmp_path / "runs")
  return make


def _settings(results):
  return sorted({(r.spec.labels["c"], r.spec.labels["placement"]) for r in results
                 if r.constrained})


def test_report_compares_each_setting_with_no_constraint_of_the_same_seed(tmp_path, e2_runs):
  results = e2_runs()
  path = render_report(E2, PROXY, results, tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert "| ∞ | – | 3 | 0.510 ± 0.010 | 0.510 ± 0.010 | 0.490 ± 0.010 | – |" in section
  assert "| 1 | every kernel | 3 |" in section
  assert f"| 1.5 | {DENSE} | cpu-proxy | 0 |" in section
  for name in ("accuracy_vs_c", "fraction_at_bound"):
    assert f"![{name}](cpu-proxy_{name}.png)" in section
    assert (path.parent / f"cpu-proxy_{name}.png").read_bytes()[:8] == PNG
  assert E2.reading(results) in section
  # c = 1 on every kernel: differences -0.052 + 0.003, -0.048 - 0.003, -0.052 + 0.003
  # (the drop of 0.05 ± 0.002 and the wobble of ± 0.003 by seed).
  drop = e2.against_unconstrained(results, (1.0, "all"), TEST)
  assert (drop.n, drop.mean) == (3, pytest.approx(-0.0497, abs=5e-5)) and drop.high < 0
  assert "| 1 | every kernel | 3 | 0.510 ± 0.010 | 0.460 ± 0.010 |" in section
  intervals = {(s, q): e2.against_unconstrained(results, s, value)
               for s in _settings(results) for q, value in (("test", TEST), ("gap", GAP))}
  assert len(intervals) == 20
  assert [k for k, d in intervals.items() if not d.contains_zero] == [((1.0, "all"), "test")]
  reading = E2.reading(results)
  assert "20 intervals at 95% are compared with 0 above, and 1 excludes it" in reading
  assert "about 1.0 would exclude 0 by chance alone" in reading
  assert "Where the gap change" not in reading  # No gap interval excludes 0 here.


def test_the_reading_says_where_the_constraint_bound(e2_runs):
  results = e2_runs()
  bound = {s: [r.bound for r in results if r.complete and
               (r.spec.labels["c"], r.spec.labels["placement"]) == s] for s in _settings(results)}
  assert bound == {s: [s[0] <= 2] * 3 for s in _settings(results)}  # c <= 2 binds.
  reading = E2.reading(results)
  assert f"c=1 on {DENSE} (3 of 3 seeds), c=1 on every kernel (3 of 3 seeds)" in reading
  assert (f"never bound in: c=3 on {DENSE}, c=3 on every kernel, c=4 on {DENSE}, c=4 on every "
          f"kernel;") in reading


def test_a_gap_that_shrinks_is_traced_to_train_or_validation_accuracy(tmp_path, fabricate,
                                                                       results_of):
  # c = 1 on the dense layer lowers train accuracy by 0.2 (± 0.01 by seed), and nothing else.
  for r in results_of(E2, PROXY, tmp_path / "runs"):
    c, placement, seed = (r.spec.labels[k] for k in ("c", "placement", "seed"))
    train = 0.8 + 0.01 * (-1) ** seed if (c, placement) == (1.0, "dense1") else 1.0
    fabricate(r.workdir, r.spec, val=0.5 + 0.01 * seed, test=0.5 + 0.01 * seed, train=train,
              bound=0.5)
  results = results_of(E2, PROXY, tmp_path / "runs")
  gap = e2.against_unconstrained(results, (1.0, "dense1"), GAP)
  train = e2.against_unconstrained(results, (1.0, "dense1"), lambda r: r.train_accuracy)
  val = e2.against_unconstrained(results, (1.0, "dense1"), lambda r: r.get("val_accuracy"))
  assert gap.mean == pytest.approx(-0.2 + 0.01 / 3) and not gap.contains_zero
  assert train.mean == pytest.approx(gap.mean) and (val.mean, val.low, val.high) == (0, 0, 0)
  reading = E2.reading(results)
  assert f"Where the gap change of c=1 on {DENSE} comes from" in reading
  assert "train accuracy -0.197 [" in reading and "validation accuracy +0.000 [+0.000, +0.000]" in (
      reading)


def test_one_seed_reads_against_the_binomial_noise_of_the_test_set(tmp_path, fabricate,
                                                                   results_of):
  cpu = BUDGETS["cpu"]
  for r in results_of(E2, cpu, tmp_path / "runs"):
    fabricate(r.workdir, r.spec, val=0.4, test=0.4, bound=1.0 if r.spec.labels["c"] == 1 else 0)
  results = results_of(E2, cpu, tmp_path / "runs")
  n, p, se = e2.binomial_noise(results)
  assert (n, p) == (1000, pytest.approx(0.4)) and se == pytest.approx(0.0155, abs=5e-5)
  reading = E2.reading(results)
  assert "on 1,000 test images an accuracy near 0.40" in reading
  assert "standard error of about 0.015, so differences below about 0.031" in reading
  assert "in some epoch) in: c=1 on Dense(1024), c=1 on every kernel." in reading


def test_incomplete_runs_are_listed_not_tabled(tmp_path, fabricate, results_of):
  cpu = BUDGETS["cpu"]
  plan = results_of(E2, cpu, tmp_path / "runs")
  fabricate(plan[1].workdir, plan[1].spec, val=0.3, test=0.31, bound=1.0)  # c=1, dense1.
  path = render_report(E2, cpu, results_of(E2, cpu, tmp_path / "runs"), tmp_path / "out",
                       command="c")
  section = read_sections(path)["cpu"]
  assert "Runs complete:** 1 of 9; not run yet: adam-lr0.0001-none-seed0, " \
         "adam-lr0.0001-c1-all-seed0" in section
  assert "| 1 | Dense(1024) | cpu | 0 | 0.300 | 0.310 |" in section
  assert "in some epoch) in: c=1 on Dense(1024)." in section and "It never bound" not in section
