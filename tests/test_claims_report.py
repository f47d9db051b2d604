"""Reports and plots from fabricated run files; budgets, specs and commands."""

import json
import math
import shlex

import pytest

from experiments.cifar10 import records
from experiments.cifar10.__main__ import parse_config
from experiments.claims import BUDGETS, EXPERIMENTS, Budget
from experiments.claims.__main__ import main
from experiments.claims.budgets import get_budget
from experiments.claims.report import equivalent_command, render_report
from experiments.claims.results import load_result
from experiments.claims.specs import get_experiment
from experiments.claims.sweep import plan_sweep

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = ("conv1", "conv2", "conv3", "dense1", "dense2")
CPU = BUDGETS["cpu"]


def _norms(dense1_max):
  return {f"{n}/kernel": {"max": dense1_max if n == "dense1" else 1.5, "mean": 1.0}
          for n in LAYERS}


def _fabricate(workdir, spec, *, val, test, bound=0.0, steps=(), diverged_at=None):
  """The files a run leaves: config, one epoch row, optional step rows, summary."""
  workdir.mkdir(parents=True)
  records.write_config(workdir, spec.config)
  records.append_metrics(workdir, {
      "epoch": 1, "step": 32, "lr": 1e-4, "train_loss": 2.0, "train_accuracy": val + 0.05,
      "val_loss": 1.9, "val_accuracy": val, "seconds": 300.0, "train_seconds": 280.0,
      "img_per_s": 14.6, "fraction_at_bound": None if spec.config.max_norm is None else bound,
      "largest_norm": None, "neuron_norms": _norms(2.5)})
  for row in steps:
    records.append_step(workdir, row)
  records.write_summary(workdir, {
      "test_accuracy": test, "test_loss": 1.9, "val_accuracy": val, "val_loss": 1.9,
      "num_params": 88914698, "backend": "cpu", "device": "cpu", "num_devices": 1,
      "cpu_count": 2, "jax_version": "0.10.2", "steps": diverged_at or 32,
      "diverged": diverged_at is not None, "diverged_at_step": diverged_at,
      "total_seconds": 330.0})


def _results(experiment, budget, runs_dir):
  return [load_result(p.spec, p.workdir) for p in plan_sweep(experiment, budget, runs_dir)]


def _e1_runs(runs_dir, *, identical=False):
  e1 = EXPERIMENTS["e1"]
  for run in plan_sweep(e1, CPU, runs_dir):
    seed = run.spec.labels["seed"]
    bump = 0.0 if identical or run.spec.config.max_norm is None else 0.01
    _fabricate(run.workdir, run.spec, val=0.40 + 0.01 * seed + bump, test=0.41 + 0.01 * seed,
               bound=0.0 if identical else 0.2)
  return _results(e1, CPU, runs_dir)


def test_e1_report_has_the_table_the_plots_and_the_commands(tmp_path):
  results = _e1_runs(tmp_path / "runs")
  path = render_report(EXPERIMENTS["e1"], CPU, results, tmp_path / "out",
                       command="python -m experiments.claims e1 --budget cpu")
  text = path.read_text()
  assert path == tmp_path / "out" / "e1_max_norm_vs_none" / "results.md"
  assert "| none | cpu | 3 | 0.410 ± 0.010 | 0.420 ± 0.010 |" in text
  assert "| max_norm(3), Dense(1024) | cpu | 3 | 0.420 ± 0.010 |" in text
  assert CPU.description in text and "Seeds:** 0, 1, 2" in text
  assert "python -m experiments.claims e1 --budget cpu" in text
  assert text.count("python -m experiments.cifar10 --preset article") == 6
  assert "Runs complete:** 6 of 6." in text
  for png in ("cpu_accuracy_by_seed.png", "cpu_final_neuron_norms.png"):
    assert (path.parent / png).read_bytes()[:8] == PNG
    assert f"]({png})" in text
  assert ("- validation accuracy, max_norm(3), Dense(1024) minus none: +0.0100 (standard error "
          "0.0082; within 2 standard errors: no detectable difference at this budget).") in text
  assert "The constraint never bound" not in text  # It bound (fraction 0.2).


def test_e1_reading_says_when_the_constraint_never_bound(tmp_path):
  results = _e1_runs(tmp_path / "runs", identical=True)
  text = render_report(EXPERIMENTS["e1"], CPU, results, tmp_path / "out", command="c").read_text()
  assert "The constraint never bound" in text
  assert "seeds with bit-identical validation and test loss in both variants: [0, 1, 2]" in text
  assert "validation accuracy, max_norm(3), Dense(1024) minus none: +0.0000" in text


def test_incomplete_runs_are_listed_not_tabled(tmp_path):
  e2 = EXPERIMENTS["e2"]
  plan = plan_sweep(e2, CPU, tmp_path / "runs")
  _fabricate(plan[0].workdir, plan[0].spec, val=0.3, test=0.31, bound=1.0)  # c=1, dense1.
  text = render_report(e2, CPU, _results(e2, CPU, tmp_path / "runs"), tmp_path / "out",
                       command="c").read_text()
  assert "Runs complete:** 1 of 9; not run yet: adam-lr0.0001-c1-all-seed0" in text
  assert "| 1 | Dense(1024) | cpu | 0 | 0.300 | 0.310 |" in text
  assert "The constraint bound (fraction at bound > 0) in: c=1 on dense1." in text
  assert "It never bound" not in text
  assert (tmp_path / "out" / e2.slug / "cpu_accuracy_vs_c.png").read_bytes()[:8] == PNG


def test_nothing_complete_renders_without_a_table_or_plots(tmp_path):
  e3 = EXPERIMENTS["e3"]
  text = render_report(e3, CPU, _results(e3, CPU, tmp_path / "runs"), tmp_path / "out",
                       command="c").read_text()
  assert "No run of this experiment is complete" in text
  assert not list((tmp_path / "out").rglob("*.png"))


def _steps(n, loss, *, nan_at=None, dense1=2.0):
  rows = []
  for step in range(1, n + 1):
    value = None if step == nan_at else loss * (1 + step)
    rows.append({"step": step, "epoch": 1, "lr": 1e-2, "loss": value, "accuracy": 0.1,
                 "fraction_at_bound": None, "largest_norm": None,
                 "neuron_norms": _norms(None if step == nan_at else dense1 * step)})
  return rows


def test_e3_report_counts_divergence_and_blow_ups_and_plots_curves(tmp_path):
  e3 = EXPERIMENTS["e3"]
  for run in plan_sweep(e3, CPU, tmp_path / "runs"):
    if run.spec.labels["optimizer"] == "sgd" and run.spec.config.max_norm is None:
      _fabricate(run.workdir, run.spec, val=0.1, test=0.1, steps=_steps(5, 2.3, nan_at=5),
                 diverged_at=5)
    else:  # Loss grows 21x by step 20: a blow-up in every other run.
      _fabricate(run.workdir, run.spec, val=0.2, test=0.2, steps=_steps(20, 2.3))
  path = render_report(e3, CPU, _results(e3, CPU, tmp_path / "runs"), tmp_path / "out",
                       command="c")
  text = path.read_text()
  assert "| sgd | 0.1 | none | 0 | 5 / 32 | yes, step 5 | no |" in text
  n = len(CPU.e3_seeds)  # Runs per setting and constraint.
  assert f"none: {n} of {4 * n} diverged (NaN/inf), {3 * n} blew up" in text
  assert f"max_norm(3), Dense(1024): 0 of {4 * n} diverged (NaN/inf), {4 * n} blew up" in text
  assert f"max_norm(3), every kernel: 0 of {4 * n} diverged" in text
  for png in ("cpu_loss_accuracy.png", "cpu_max_neuron_norms.png", "cpu_mean_neuron_norms.png"):
    assert (path.parent / png).read_bytes()[:8] == PNG


def test_a_second_budget_gets_its_own_section_and_keeps_the_first(tmp_path):
  results = _e1_runs(tmp_path / "runs")
  out = tmp_path / "out"
  render_report(EXPERIMENTS["e1"], CPU, results, out, command="cpu command")
  full = BUDGETS["full"]
  path = render_report(EXPERIMENTS["e1"], full, _results(EXPERIMENTS["e1"], full,
                                                         tmp_path / "runs"), out,
                       command="full command")
  render_report(EXPERIMENTS["e1"], CPU, results, out, command="cpu command")  # Re-render.
  text = path.read_text()
  assert text.count("<!-- budget:cpu -->") == 1 and text.count("<!-- budget:full -->") == 1
  cpu_part = text.split("<!-- budget:cpu -->")[1].split("<!-- /budget:cpu -->")[0]
  full_part = text.split("<!-- budget:full -->")[1].split("<!-- /budget:full -->")[0]
  assert "cpu command" in cpu_part and "0.410 ± 0.010" in cpu_part
  assert "full command" in full_part and "0.410" not in full_part


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_each_runs_single_command_trains_exactly_its_config(experiment, budget):
  runs = EXPERIMENTS[experiment].runs(BUDGETS[budget])
  assert len({r.name for r in runs}) == len(runs)  # One directory per run.
  for run in runs:
    words = shlex.split(equivalent_command(run.config, "w"))
    config, workdir, _ = parse_config(words[3:])
    assert config == run.config and workdir == "w"


def test_the_experiments_are_the_ones_the_issue_asks_for():
  e1 = EXPERIMENTS["e1"].runs(CPU)
  assert sum(r.config.max_norm is None for r in e1) == sum(r.config.max_norm == 3.0 for r in e1)
  assert len({r.config.seed for r in e1}) >= 3
  assert {r.config.constrain for r in e1 if r.config.max_norm} == {"dense1"}
  e2 = EXPERIMENTS["e2"].runs(CPU)
  assert {(r.labels["c"], r.labels["placement"]) for r in e2} == (
      {(c, p) for c in (1.0, 2.0, 3.0, 4.0) for p in ("dense1", "all")} | {(math.inf, "none")})
  e3 = EXPERIMENTS["e3"].runs(CPU)
  constraints = {(None, "dense1"), (3.0, "dense1"), (3.0, "all")}
  assert len(e3) == 12 * len(CPU.e3_seeds)
  assert {(r.config.optimizer, r.config.learning_rate, r.config.max_norm, r.config.constrain)
          for r in e3} == {
      (o, lr, c, where)
      for o, lr in (("adam", 1e-3), ("adam", 3e-3), ("adam", 1e-2), ("sgd", 0.1))
      for c, where in constraints}
  assert [r.config.max_norm for r in e3[:2]] == [None, 3.0]  # The article's pair first.
  assert all(r.config.log_every >= 1 for r in e3)
  full = EXPERIMENTS["e1"].runs(BUDGETS["full"])
  assert {(r.config.epochs, r.config.train_subset) for r in full} == {(10, None)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(name=""), "non-empty directory name"),
    (dict(name="a/b"), "non-empty directory name"),
    (dict(e1_seeds=()), "e1_seeds must name at least one seed"),
    (dict(short=dict(epochs=1)), "needs log_every >= 1"),
])
def test_bad_budgets_are_clear_errors(kwargs, message):
  base = dict(name="x", description="d", short_description="s", regular={},
              short=dict(log_every=1))
  with pytest.raises(ValueError, match=message):
    Budget(**{**base, **kwargs})


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match=r"Unknown budget 'gpu'; choose from \['cpu', 'full'\]"):
    get_budget("gpu")
  with pytest.raises(ValueError, match=r"Unknown experiment 'e9'"):
    get_experiment("e9")


@pytest.mark.parametrize("argv, message", [
    (["e9", "--budget", "cpu"], "invalid choice: 'e9'"),
    (["e1"], "--budget"),
    (["e1", "--budget", "gpu"], "invalid choice: 'gpu'"),
    (["e1", "--budget", "cpu", "--max-runs", "0"], "must be >= 1"),
])
def test_bad_flags_exit_with_code_2(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_report_only_on_a_conflicting_directory_exits_1(tmp_path, capsys):
  spec = EXPERIMENTS["e3"].runs(CPU)[0]
  workdir = tmp_path / "cpu" / "short" / spec.name
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({**spec.config.to_json(), "seed": 7}))
  code = main(["e3", "--budget", "cpu", "--runs-dir", str(tmp_path), "--results-dir",
               str(tmp_path / "out"), "--report-only"])
  assert code == 1 and "seed: on disk 7 vs sweep 0" in capsys.readouterr().err
