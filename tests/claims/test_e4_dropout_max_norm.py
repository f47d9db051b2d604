"""E4: its design, what counts as a failed run, its questions' numbers, and its report."""

import dataclasses
import math

import pytest

from experiments.claims import e4_dropout_max_norm as e4
from experiments.claims.arms import EVERY_KERNEL, NONE, arm_of
from experiments.claims.budgets import BUDGETS
from experiments.claims.e4_dropout_max_norm import EXPERIMENT as E4
from experiments.claims.report import read_sections, render_report
from experiments.claims.results import RunResult

PROXY = BUDGETS["cpu-proxy"]
SGD_RATES = (0.003, 0.01, 0.03, 0.05)
ADAM_RATES = (1e-3, 3e-3, 1e-2)
ARMS = [(0.0, None), (0.0, 3.0), (0.5, None), (0.5, 3.0)]
SGD_ARMS = [*ARMS, (0.0, 1.5), (0.5, 1.5)]  # A bound that binds at SGD's rates, too.


def test_cpu_proxy_crosses_dropout_and_max_norm_over_each_optimizers_rates():
  runs = E4.runs(PROXY)
  cells = {(r.config.optimizer, r.config.learning_rate, r.config.dropout, r.config.max_norm)
           for r in runs}
  assert cells == {("sgd", lr, *a) for lr in SGD_RATES for a in SGD_ARMS} | {
      ("adam", lr, *a) for lr in ADAM_RATES for a in ARMS}
  # 3 seeds per cell, then seeds 3 and 4 at SGD 0.01 and Adam 1e-3, after them.
  assert len(runs) == len(cells) * 3 + 2 * (len(SGD_ARMS) + len(ARMS))
  assert {(r.config.optimizer, r.config.learning_rate, r.config.seed)
          for r in runs[len(cells) * 3:]} == {(o, lr, s) for o, lr in (("sgd", 0.01),
                                                                     ("adam", 1e-3))
                                              for s in (3, 4)}
  assert {r.config.constrain for r in runs if r.config.max_norm} == {"all"}  # The paper's.
  assert {r.config.momentum for r in runs if r.config.optimizer == "sgd"} == {0.95}
  assert all(r.config.conv_dropout == 0 and r.config.epochs == 16 for r in runs)
  # Seed by seed, SGD before Adam, a (rate, seed)'s arms one after another.
  per_seed = len(SGD_RATES) * len(SGD_ARMS) + len(ADAM_RATES) * len(ARMS)
  assert [r.config.seed for r in runs[:per_seed]] == [0] * per_seed
  assert [r.config.optimizer for r in runs[:per_seed]] == ["sgd"] * 24 + ["adam"] * 12
  first = runs[:6]
  assert len({(r.config.learning_rate, r.config.seed) for r in first}) == 1
  assert [(r.config.dropout, r.config.max_norm) for r in first] == SGD_ARMS


def test_paired_rates_add_the_paired_seeds_at_those_rates_only(monkeypatch):
  design = e4.Design(rates={"sgd": (0.01, 0.1)}, seeds=(0,), paired_seeds=(3, 4),
                     paired_rates=(("sgd", 0.1),))
  monkeypatch.setitem(e4.DESIGNS, PROXY.name, design)
  runs = E4.runs(PROXY)
  assert len(runs) == 2 * 4 + 2 * 4
  assert {(r.config.learning_rate, r.config.seed) for r in runs[8:]} == {(0.1, 3), (0.1, 4)}
  # A further bound is run with and without dropout, at the paired rates too.
  monkeypatch.setitem(e4.DESIGNS, PROXY.name, dataclasses.replace(design, bounds={
      "sgd": (3.0, 1.5)}))
  assert len(E4.runs(PROXY)) == 2 * 6 + 2 * 6


def _result(optimizer="sgd", lr=0.01, dropout=0.0, arm=NONE, seed=0, *, val=0.5, test=0.5,
            train_loss=1.0, diverged=False, fractions=(0.1,)):
  """A complete E4 run with the given outcome (no files)."""
  spec = next(r for r in E4.runs(PROXY) if (r.config.optimizer, r.config.learning_rate,
                                            r.config.dropout) == (optimizer, lr, dropout)
              and arm_of_config(r.config) == arm)
  spec = type(spec)(spec.name, spec.config.__class__(**{**spec.config.to_json(), "seed": seed}),
                    {**spec.labels, "seed": seed})
  metrics = [{"epoch": e + 1, "train_loss": train_loss, "fraction_at_bound": f}
             for e, f in enumerate(fractions)]
  summary = {"val_accuracy": val, "test_accuracy": test, "diverged": diverged}
  return RunResult(spec, None, summary, metrics, [])


def arm_of_config(config):
  return NONE if config.max_norm is None else (config.max_norm, config.constrain)


@pytest.mark.parametrize("train_loss, diverged, stuck, failed", [
    (math.log(10) + 0.04, False, True, True),
    (math.log(10) - 0.06, False, False, False),
    (1.2, False, False, False),
    (None, True, False, True),  # NaN/inf: failed, but not "at chance".
])
def test_a_run_fails_if_it_diverged_or_ended_at_chance(train_loss, diverged, stuck, failed):
  r = _result(train_loss=train_loss, diverged=diverged)
  assert e4.stuck_at_chance(r) is stuck and e4.failed(r) is failed


def test_best_rates_are_chosen_on_validation_and_compared_on_test():
  runs = [_result(lr=lr, seed=s, val=v, test=t)
          for lr, v, t in ((0.01, 0.50, 0.70), (0.03, 0.55, 0.40)) for s in (0, 1)]
  grid = e4.cells(runs)
  assert e4.best_rates(grid) == {("sgd", 0.0, NONE): 0.03}  # Not 0.01's higher test acc.


def test_the_highest_rate_that_trains_and_whether_a_failing_rate_is_above_it():
  runs = [_result(lr=0.003), _result(lr=0.01), _result(lr=0.03, seed=1),
          _result(lr=0.03, diverged=True, train_loss=None), _result(lr=0.05)]
  grid = e4.cells(runs)
  assert e4.highest_training_rate(grid, "sgd", 0.0, NONE) == (0.05, False)
  grid = e4.cells(runs[:4])
  assert e4.highest_training_rate(grid, "sgd", 0.0, NONE) == (0.01, True)
  grid = e4.cells([_result(lr=0.01, train_loss=math.log(10))])
  assert e4.highest_training_rate(grid, "sgd", 0.0, NONE) == (None, True)
  assert "no dropout, none: every rate had a failure" in e4._reading(
      [_result(lr=0.01, train_loss=math.log(10))])


def test_interaction_is_max_norms_effect_with_dropout_minus_without_per_seed():
  # Seed s: without dropout max-norm adds 0.01; with dropout it adds 0.05 + 0.01 * s.
  acc = {(0.0, NONE): 0.50, (0.0, EVERY_KERNEL): 0.51, (0.5, NONE): 0.52}
  runs = []
  for s in (0, 1, 2):
    for (d, a), value in acc.items():
      runs.append(_result(dropout=d, arm=a, seed=s, test=value))
    runs.append(_result(dropout=0.5, arm=EVERY_KERNEL, seed=s, test=0.57 + 0.01 * s))
  d = e4.interaction(e4.cells(runs), "sgd", 0.01)
  assert d.n == 3 and d.mean == pytest.approx(0.05) and d.low < 0.05 < d.high
  assert e4.interaction(e4.cells(runs[:4]), "sgd", 0.01) is None  # One seed: no interval.


def test_report_answers_the_three_questions_from_fabricated_runs(tmp_path, fabricate,
                                                                results_of):
  runs_dir = tmp_path / "runs"
  plan = results_of(E4, PROXY, runs_dir)
  for r in plan:
    labels = r.spec.labels
    if labels["optimizer"] != "sgd" or labels["seed"] > 1:
      continue
    held = arm_of(r) != NONE
    # Dropout + max-norm(3) is 0.02 better than dropout alone, max-norm(1.5) 0.01 worse
    # and never at the bound; the top rate fails unconstrained.
    bonus = {NONE: 0.0, EVERY_KERNEL: 0.02, (1.5, "all"): -0.01}[arm_of(r)]
    test = 0.5 + bonus * (labels["dropout"] > 0) + 0.001 * labels["seed"]
    top = labels["lr"] == 0.05
    fabricate(r.workdir, r.spec, val=test, test=test, epochs=16,
              bound=0.0 if arm_of(r) == (1.5, "all") else 0.3,
              diverged_at=5 if top and not held else None)
  results = results_of(E4, PROXY, runs_dir)
  path = render_report(E4, PROXY, results, tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert "- **Runs complete:** 48 of 128" in section
  # The runs set the optimizer and rate: the budget is described without its own.
  assert "- **Budget:** the article's network at conv width 32 and dense width 256, 16 " \
         "epochs on the first 4,000 training images" in section
  assert ("sgd, question 1: dropout 0.5 + max_norm(3) at its best rate" in section
          and "test accuracy: +0.020 [+0.020, +0.020] over 2 seeds (higher, the interval "
              "excludes 0); the constraint bound in 2 of 2 of these runs (0.300 of the neurons at "
              "the bound in the last epoch, on average)." in section)
  assert ("sgd, question 1: dropout 0.5 + max_norm(1.5) at its best rate" in section
          and "test accuracy: -0.010 [-0.010, -0.010] over 2 seeds (lower, the interval "
              "excludes 0); the constraint bound in 0 of 2 of these runs (so the "
              "difference is not its doing)." in section)
  assert ("no dropout, none: 0.03; no dropout, max_norm(3), every kernel: 0.05 (top of the "
          "sweep)" in section)
  assert "dropout 0.5, max_norm(1.5), every kernel: 0.05 (top of the sweep)." in section
  assert "sgd 0.01, question 3: max_norm(3)'s effect on test accuracy with dropout minus " \
         "without: +0.020 [+0.020, +0.020] over 2 seeds" in section
  assert "sgd 0.01, question 3: max_norm(1.5)'s effect on test accuracy with dropout " \
         "minus without: -0.010 [-0.010, -0.010] over 2 seeds" in section
  assert "| sgd | 0.01 | 0.5 | 1.5 | 0.000 |" in section  # Fraction at bound, per c.
  assert "adam, question" not in section  # No Adam run yet: nothing said about Adam,
  assert "| adam | no dropout, none |" not in section  # nor an empty row of its best rates.
  for plot in ("accuracy_vs_lr", "fraction_at_bound"):
    assert (path.parent / f"cpu-proxy_{plot}.png").read_bytes().startswith(b"\x89PNG")
