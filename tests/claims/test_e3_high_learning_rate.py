"""E3: its design, what counts as a failed run, and its report from fabricated runs."""

import pytest

from experiments.claims import e3_high_learning_rate as e3_module
from experiments.claims.arms import DENSE_ONLY, EVERY_KERNEL, NONE, arm_of
from experiments.claims.budgets import BUDGETS
from experiments.claims.e3_high_learning_rate import EXPERIMENT as E3
from experiments.claims.e3_high_learning_rate import blew_up, failed, stuck_at_chance
from experiments.claims.report import read_sections, render_report
from experiments.claims.results import RunResult, dense_name, row_norm

PNG = b"\x89PNG\r\n\x1a\n"
PROXY = BUDGETS["cpu-proxy"]
DENSE = dense_name(PROXY.config("short"))  # Dense(256) at the time of writing.
ADAM = {("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2)}


@pytest.mark.parametrize("budget, seeds, sgd_rates, arms", [
    ("cpu", 2, (0.1,), {(None, "dense1"), (3.0, "dense1"), (3.0, "all")}),  # As committed.
    ("cpu-proxy", 3, (0.1, 0.3), {(None, "dense1"), (3.0, "dense1"), (3.0, "all")}),
    ("full", 1, (0.1, 0.3), {(None, "dense1"), (3.0, "dense1"), (3.0, "all")}),
])
def test_each_setting_runs_without_and_with_max_norm(budget, seeds, sgd_rates, arms):
  runs = E3.runs(BUDGETS[budget])
  settings = ADAM | {("sgd", lr) for lr in sgd_rates}
  assert len(runs) == seeds * len(settings) * len(arms)
  assert {(r.config.optimizer, r.config.learning_rate, r.config.max_norm, r.config.constrain)
          for r in runs} == {(*s, *a) for s in settings for a in arms}
  assert [r.config.max_norm for r in runs[:2]] == [None, 3.0]  # The article's pair first.
  assert all(r.config.log_every >= 1 and r.config.momentum == 0.9 for r in runs)
  if (3.0, "all") in arms:  # Every-kernel runs last: a cut-short sweep keeps the pairs.
    n = seeds * len(settings) * 2
    assert {r.config.constrain for r in runs[n:]} == {"all"}


def _run(losses, *, diverged_at=None):
  spec = E3.runs(PROXY)[0]
  steps = [{"step": i + 1, "loss": x, "accuracy": 0.1, "neuron_norms": None}
           for i, x in enumerate(losses)]
  summary = {"diverged": diverged_at is not None, "diverged_at_step": diverged_at}
  return RunResult(spec, None, summary, [], steps)


@pytest.mark.parametrize("losses, stuck", [
    ([2.0, 2.31, 2.29, 2.30, 2.34, 2.26], True),  # The last 5 within 0.05 of 2.3026.
    ([2.31, 2.29, 2.30, 2.36, 2.30], False),  # 2.36 is 0.057 away.
    ([2.30, 2.30, 2.30, 2.30, 1.9], False),  # Learning at the end.
    ([2.30, 2.31], True),  # Fewer logged steps than the window: all of them.
    ([], False),
])
def test_stuck_at_chance_is_the_last_five_losses_within_0_05_of_ln_10(losses, stuck):
  r = _run(losses)
  assert stuck_at_chance(r) is stuck and failed(r) is stuck


def test_a_diverged_run_fails_but_is_not_stuck_at_chance():
  r = _run([2.3, 2.3, None], diverged_at=3)
  assert failed(r) and not stuck_at_chance(r)


def test_a_blow_up_is_a_loss_above_10x_the_first():
  assert blew_up(_run([2.3, 23.1, 2.3])) and not blew_up(_run([2.3, 22.9, None]))


@pytest.fixture
def e3_runs(tmp_path, fabricate, step_rows, results_of, monkeypatch):
  """E3's cpu-proxy runs, in two arms (without, and with max-norm on the dense layer):
  SGD 0.3 without the constraint diverges at step 5 (the summary counts 16 steps); Adam
  1e-2 ends at chance in both arms; the rest learn."""
  monkeypatch.setitem(e3_module.DESIGNS, "cpu-proxy",
                      e3_module.Design(seeds=(0, 1, 2), every_kernel=False))
  for r in results_of(E3, PROXY, tmp_path / "runs"):
    setting = (r.spec.config.optimizer, r.spec.config.learning_rate)
    if setting == ("sgd", 0.3) and not r.constrained:
      fabricate(r.workdir, r.spec, val=0.1, test=0.1, steps=step_rows(5, 0.1, nan_at=5),
                diverged_at=5, steps_run=16)
    elif setting == ("adam", 1e-2):
      fabricate(r.workdir, r.spec, val=0.1, test=0.1,
                steps=step_rows(10, 0.0, chance=True, dense1=0.3 if r.constrained else 1.0))
    else:
      fabricate(r.workdir, r.spec, val=0.4, test=0.4,
                steps=step_rows(10, 0.1, dense1=0.3 if r.constrained else 0.5))
  return results_of(E3, PROXY, tmp_path / "runs")


def test_report_counts_failures_per_setting_and_arm_and_plots_curves(tmp_path, e3_runs):
  path = render_report(E3, PROXY, e3_runs, tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert ("| sgd | 0.3 | 3 of 3 (3 NaN, 0 at chance) | 0 of 3 (0 NaN, 0 at chance) | 0.10 |"
          in section)
  assert ("| adam | 0.01 | 3 of 3 (0 NaN, 3 at chance) | 3 of 3 (0 NaN, 3 at chance) | 1.00 |"
          in section)
  # Steps run stop at the NaN (step 5), not at the summary's 16.
  planned = PROXY.config("short").epochs * 32  # The fabricated epochs' 32 steps each.
  assert f"| sgd | 0.3 | none | 0 | 5 / {planned} | yes, step 5 | no | no | 0.200 |" in section
  assert "| 8 | 1.5 |" in section  # Its norms: step 4's (2.0 x 4), as step 5 measured none.
  assert "| 0.100 | 0.400 | 0.400 | 3 | 1.5 |" in section  # The dense layer: 0.3 x 10.
  for name in ("loss_accuracy", "max_neuron_norms", "mean_neuron_norms"):
    assert (path.parent / f"cpu-proxy_{name}.png").read_bytes()[:8] == PNG
  assert E3.reading(e3_runs) in section


def _cell(results, setting, arm):
  return e3_module.grid(results)[2][setting, arm]


def test_failures_are_counted_and_tested_setting_by_setting(e3_runs):
  settings, arms, cells = e3_module.grid(e3_runs)
  assert arms == [NONE, DENSE_ONLY] and settings[0] == ("adam", 1e-3)
  counts = {(s, a): e3_module.failures(cells[s, a]) for s in settings for a in arms}
  assert counts[("sgd", 0.3), NONE] == (3, 3, 0) and counts[("sgd", 0.3), DENSE_ONLY] == (3, 0, 0)
  assert counts[("adam", 1e-2), NONE] == counts[("adam", 1e-2), DENSE_ONLY] == (3, 0, 3)
  assert {c.failed for s, c in counts.items() if s[0] not in (("sgd", 0.3), ("adam", 1e-2))} == {0}
  p = e3_module.failure_p(cells[("sgd", 0.3), NONE], cells[("sgd", 0.3), DENSE_ONLY])
  assert p == pytest.approx(0.1)  # 3 of 3 against 0 of 3: 2 / C(6, 3).
  reading = E3.reading(e3_runs)
  assert "- none: 3 of 15 diverged (NaN/inf), 3 stuck at chance, 0 blew up;" in reading
  assert f"{DENSE}: 0 of 15 diverged (NaN/inf), 3 stuck at chance, 0 blew up." in reading
  assert "- sgd 0.3: failed without the constraint 3 of 3 (3 NaN, 0 at chance)" in reading
  assert "p = 0.10: not distinguishable from noise" in reading
  assert ("for: adam 0.001 (0 of 3), adam 0.003 (0 of 3), adam 0.01 (3 of 3), sgd 0.1 (0 of 3); "
          "no effect on failure.") in reading


def test_the_reading_ranges_each_arms_last_logged_norms(e3_runs):
  last = {arm: sorted({row_norm(r.last_logged_norms) for r in e3_runs if arm_of(r) == arm})
          for arm in (NONE, DENSE_ONLY)}
  # Free: 0.5 x 10 steps (adam 1e-2: 1.0 x 10), and 2.0 x 4 where step 5 diverged;
  # constrained: 0.3 x 10.
  assert last == {NONE: [5.0, 8.0, 10.0], DENSE_ONLY: [3.0]}
  reading = E3.reading(e3_runs)
  assert f"at the last logged step (c = 3): none 5 to 10; max_norm(3), {DENSE} 3." in reading
  assert f"none 1.5; max_norm(3), {DENSE} 1.5." in reading  # The convolutions'.


def test_reading_compares_each_constrained_arm_with_no_constraint(tmp_path, fabricate,
                                                                  step_rows, results_of):
  # Every kernel: SGD 0.3 fails without the constraint and with it on the dense layer only,
  # and learns with it on every kernel.
  for r in results_of(E3, PROXY, tmp_path / "runs"):
    setting = (r.spec.config.optimizer, r.spec.config.learning_rate)
    every = r.constrained and r.spec.config.constrain == "all"
    if setting == ("sgd", 0.3) and not every:
      fabricate(r.workdir, r.spec, val=0.1, test=0.1,
                steps=step_rows(10, 0.0, chance=True, dense1=0.3 if r.constrained else 1.0))
    else:
      fabricate(r.workdir, r.spec, val=0.4, test=0.4,
                steps=step_rows(10, 0.1, dense1=0.3 if r.constrained else 0.5))
  results = results_of(E3, PROXY, tmp_path / "runs")
  sgd = {arm: _cell(results, ("sgd", 0.3), arm) for arm in (NONE, DENSE_ONLY, EVERY_KERNEL)}
  assert [e3_module.failures(runs).chance for runs in sgd.values()] == [3, 3, 0]
  assert e3_module.failure_p(sgd[NONE], sgd[EVERY_KERNEL]) == pytest.approx(0.1)
  assert e3_module.failure_p(sgd[NONE], sgd[DENSE_ONLY]) == 1.0
  reading = E3.reading(results)
  assert "max_norm(3), every kernel: 0 of 15 diverged (NaN/inf), 0 stuck at chance" in reading
  assert ("- sgd 0.3: failed without the constraint 3 of 3 (0 NaN, 3 at chance), with "
          "max_norm(3), every kernel 0 of 3 (0 NaN, 0 at chance)") in reading
  assert f"{DENSE} for: adam 0.001 (0 of 3), adam 0.003 (0 of 3), adam 0.01 (0 of 3)" in reading
  assert "; max_norm(3), every kernel 3." in reading
