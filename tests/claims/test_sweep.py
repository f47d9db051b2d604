"""The claims sweep driver: which runs it trains, skips, resumes or refuses to touch."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from experiments.cifar10 import records
from experiments.cifar10.workdir import WorkdirError
from experiments.claims.budgets import BUDGETS
from experiments.claims.cli import main as cli_main
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.report import render_report
from experiments.claims.results import load_result
from experiments.claims.sweep import RunConflictError, plan_sweep, run_sweep, workdir_of

REPO = pathlib.Path(__file__).resolve().parents[2]


class FakeTrain:
  """Stands in for train_and_evaluate: writes what a finished run leaves behind."""

  def __init__(self):
    self.calls = []
    self.overwrites = []

  def __call__(self, config, workdir, *, resume, overwrite=False):
    self.calls.append((pathlib.Path(workdir).name, resume))
    self.overwrites.append(overwrite)
    workdir = pathlib.Path(workdir)
    if overwrite:  # The old run goes (the pipeline sets it aside until the new one is done).
      for old in workdir.glob("*.json*"):
        old.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    records.write_config(workdir, config)
    (workdir / "checkpoints" / "1").mkdir(parents=True, exist_ok=True)
    (workdir / "checkpoints" / "1" / "state").write_bytes(b"weights")
    records.truncate_metrics(workdir, 0)
    for epoch in range(1, config.epochs + 1):
      records.append_metrics(workdir, {"epoch": epoch, "val_accuracy": 0.5})
    records.write_summary(workdir, {"test_accuracy": 0.5, "epochs": config.epochs})


@pytest.fixture
def sweep(tiny_budget):
  """``sweep(runs_dir, experiment="e1", **kwargs)``: a sweep of the tiny budget with a fake
  trainer; returns the trainer (its calls) and the plan."""
  def run(runs_dir, experiment="e1", **kwargs):
    fake = FakeTrain()
    plan = run_sweep(EXPERIMENTS[experiment], tiny_budget, runs_dir, train=fake,
                     log=lambda _: None, **kwargs)
    return fake, plan
  return run


def test_a_second_sweep_skips_every_complete_run(tmp_path, sweep):
  fake, plan = sweep(tmp_path)
  assert len(fake.calls) == len(plan) == 6 and {p.status for p in plan} == {"new"}
  assert not any(resume for _, resume in fake.calls)  # New runs start afresh.
  again, plan = sweep(tmp_path)
  assert again.calls == [] and {p.status for p in plan} == {"complete"}


def test_runs_live_in_budget_schedule_and_run_name_directories(tmp_path, sweep):
  _, plan = sweep(tmp_path, "e3")
  assert {p.workdir.relative_to(tmp_path).parts[:2] for p in plan} == {("tiny", "short")}
  assert all(p.workdir.name == p.spec.name for p in plan)


def test_a_partial_run_is_resumed_and_only_it(tmp_path, sweep, tiny_budget):
  sweep(tmp_path)
  partial = workdir_of(tmp_path, tiny_budget, EXPERIMENTS["e1"],
                       EXPERIMENTS["e1"].runs(tiny_budget)[3])
  (partial / "summary.json").unlink()  # Died before the end: config and checkpoints remain.
  fake, plan = sweep(tmp_path)
  assert fake.calls == [(partial.name, True)]
  assert [p.status for p in plan].count("partial") == 1


def test_a_directory_with_another_config_stops_the_sweep_before_training(tmp_path,
                                                                          tiny_budget):
  spec = EXPERIMENTS["e1"].runs(tiny_budget)[2]
  workdir = workdir_of(tmp_path, tiny_budget, EXPERIMENTS["e1"], spec)
  workdir.mkdir(parents=True)
  records.write_config(workdir, dataclasses.replace(spec.config, learning_rate=0.5))
  before = (workdir / "config.json").read_text()
  fake = FakeTrain()
  with pytest.raises(RunConflictError, match=r"learning_rate: on disk 0.5 vs sweep 0.0001"):
    run_sweep(EXPERIMENTS["e1"], tiny_budget, tmp_path, train=fake, log=lambda _: None)
  assert fake.calls == [] and (workdir / "config.json").read_text() == before


def test_config_files_from_before_new_fields_still_match(tmp_path, sweep):
  sweep(tmp_path)
  for config_file in tmp_path.rglob("config.json"):
    saved = json.loads(config_file.read_text())
    for field in ("log_every", "optimizer", "momentum"):  # Fields added later, at defaults.
      del saved[field]
    config_file.write_text(json.dumps(saved))
  fake, _ = sweep(tmp_path)
  assert fake.calls == []


def test_an_unreadable_config_is_a_conflict(tmp_path, tiny_budget):
  spec = EXPERIMENTS["e1"].runs(tiny_budget)[0]
  workdir = workdir_of(tmp_path, tiny_budget, EXPERIMENTS["e1"], spec)
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({"no_such_field": 1}))
  with pytest.raises(RunConflictError, match="not a config this code can read"):
    plan_sweep(EXPERIMENTS["e1"], tiny_budget, tmp_path)


def test_checkpoints_are_deleted_unless_kept(tmp_path, sweep):
  sweep(tmp_path / "a")
  assert not list((tmp_path / "a").rglob("checkpoints"))
  _, plan = sweep(tmp_path / "b", keep_checkpoints=True)
  assert len(list((tmp_path / "b").rglob("checkpoints"))) == len(plan)


def test_max_runs_trains_that_many_and_the_next_sweep_goes_on(tmp_path, sweep):
  fake, plan = sweep(tmp_path, max_runs=2)
  assert len(fake.calls) == 2
  fake, _ = sweep(tmp_path, max_runs=10)
  assert len(fake.calls) == len(plan) - 2
  with pytest.raises(ValueError, match="max_runs must be >= 1"):
    sweep(tmp_path, max_runs=0)


def test_e1_and_e2_share_the_runs_they_both_need(tmp_path, sweep):
  _, e1 = sweep(tmp_path, "e1")
  fake, plan = sweep(tmp_path, "e2")
  shared = {p.spec.name for p in plan if p.status == "complete"}
  e2_seeds = {p.spec.labels["seed"] for p in plan}
  assert shared == {p.spec.name for p in e1 if p.spec.labels["seed"] in e2_seeds}
  assert shared == {f"adam-lr0.0001-{arm}-seed{seed}" for arm in ("c3-dense1", "none")
                    for seed in e2_seeds}
  assert len(fake.calls) == len(plan) - len(shared)


@pytest.mark.usefixtures("mock_cifar10")
def test_a_real_sweep_on_mock_data_trains_logs_and_reports(tmp_path, tiny_budget):
  # One of E3's runs (Adam 1e-3 with max-norm), tiny network, fake data.
  e3 = EXPERIMENTS["e3"]
  one = dataclasses.replace(e3, runs=lambda b: e3.runs(b)[1:2])
  plan = run_sweep(one, tiny_budget, tmp_path / "runs", log=lambda _: None)
  results = [load_result(p.spec, p.workdir) for p in plan]
  assert all(r.complete and not r.diverged for r in results)
  assert [len(r.steps) for r in results] == [8]  # log_every=1, 8 steps.
  assert all(r.last_epoch["fraction_at_bound"] is not None for r in results)  # Telemetry.
  assert (plan[0].workdir / "host.json").exists()
  assert not list((tmp_path / "runs").rglob("checkpoints"))
  path = render_report(one, tiny_budget, results, tmp_path / "results", command="cmd")
  text = path.read_text()
  assert "| adam | 0.001 | max_norm(3), Dense(16) | 0 | 8 / 8 | no |" in text
  for png in ("tiny_loss_accuracy.png", "tiny_max_neuron_norms.png"):
    assert (path.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  again = run_sweep(one, tiny_budget, tmp_path / "runs", log=lambda _: None)
  assert {p.status for p in again} == {"complete"}
  # A damaged record: the pipeline itself trains the run again over it.
  (plan[0].workdir / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
  logged = []
  again = run_sweep(one, tiny_budget, tmp_path / "runs", log=logged.append)
  assert [p.status for p in again] == ["damaged"] and any("damaged: " in x for x in logged)
  redone = load_result(again[0].spec, again[0].workdir)
  assert redone.complete and [row["epoch"] for row in redone.metrics] == [1]
  assert redone.get("test_accuracy") == results[0].get("test_accuracy")  # Same run, again.
  assert not (plan[0].workdir / "replaced").exists()


@pytest.mark.parametrize("damage, message", [
    ("", "holds rows for epochs [], not one per epoch"),
    ('{"epoch": 2}\n', "holds rows for epochs [2], not one per epoch"),
    ('{"epoch": 1}\n{"epoch": 1}\n', "holds rows for epochs [1, 1], not one per epoch"),
    ('{"epoch": 1}\nnot json\n', "metrics.jsonl, line 2: not a JSON object"),
])
def test_a_damaged_run_is_reported_and_trained_again_never_read(tmp_path, sweep, tiny_budget,
                                                               damage, message, capsys,
                                                               monkeypatch):
  monkeypatch.setitem(BUDGETS, tiny_budget.name, tiny_budget)  # For the command line.
  _, plan = sweep(tmp_path)
  damaged = plan[1].workdir
  assert plan[1].spec.config.epochs == 1
  (damaged / "metrics.jsonl").write_text(damage)
  planned = plan_sweep(EXPERIMENTS["e1"], tiny_budget, tmp_path)
  assert [p.status for p in planned].count("damaged") == 1
  assert planned[1].status == "damaged" and message in planned[1].problem
  # --report-only leaves it out of the table, and says so.
  out = tmp_path / "out"
  assert cli_main(["e1", "--budget", "tiny", "--runs-dir", str(tmp_path), "--results-dir",
                   str(out), "--report-only"]) == 0
  assert f"{damaged.name}: left out of the report, its records are damaged" in (
      capsys.readouterr().err)
  assert "- **Runs complete:** 5 of 6; not run yet: " + damaged.name in (
      out / "e1_max_norm_vs_none" / "results.md").read_text()
  # A sweep trains it again, from scratch, and only it.
  logged = []
  fake = FakeTrain()
  run_sweep(EXPERIMENTS["e1"], tiny_budget, tmp_path, train=fake, log=logged.append)
  assert fake.calls == [(damaged.name, False)] and fake.overwrites == [True]
  assert any("damaged: " in line and message in line for line in logged)
  assert plan_sweep(EXPERIMENTS["e1"], tiny_budget, tmp_path)[1].status == "complete"


def test_a_run_another_sweep_is_training_stops_this_one(tmp_path, sweep, tiny_budget):
  spec = EXPERIMENTS["e1"].runs(tiny_budget)[0]
  busy = workdir_of(tmp_path, tiny_budget, EXPERIMENTS["e1"], spec)
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(busy)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(WorkdirError, match=f"is in use by pid {holder.pid} on host "):
      sweep(tmp_path)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
  fake, _ = sweep(tmp_path)  # The holder died: its lock does not block.
  assert len(fake.calls) == 6


HOLDER = """
import pathlib, sys, time
from experiments.cifar10 import workdir
with workdir.exclusive(pathlib.Path(sys.argv[1])):
  print("held", flush=True)
  time.sleep(120)
"""
