"""Complete runs' records kept beside the report: copied as runs complete, copied back to a
runs directory that lacks them, and checked like any run when they come back."""

import pathlib
import shutil

import pytest

from experiments.cifar10 import records
from experiments.claims import archive
from experiments.claims.budgets import BUDGETS
from experiments.claims.cli import main as cli_main
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.report import read_sections
from experiments.claims.sweep import plan_sweep, run_sweep, workdir_of
from tests.claims.test_sweep import FakeTrain

REPO = pathlib.Path(__file__).resolve().parents[2]
E1 = EXPERIMENTS["e1"]


def _sweep(tiny_budget, runs_dir, store):
  fake = FakeTrain()
  run_sweep(E1, tiny_budget, runs_dir, train=fake, archive=store, log=lambda _: None)
  return fake


def _workdirs(budget, runs_dir):
  return [workdir_of(runs_dir, budget, E1, spec) for spec in E1.runs(budget)]


def test_each_complete_run_is_kept_without_its_checkpoints(tmp_path, tiny_budget):
  store = tmp_path / "kept"
  _sweep(tiny_budget, tmp_path / "runs", store)
  assert sorted(p.name for p in store.iterdir()) == sorted(
      spec.name for spec in E1.runs(tiny_budget))
  for workdir in _workdirs(tiny_budget, tmp_path / "runs"):
    kept = store / workdir.name  # The records, byte for byte; no checkpoint or lock.
    assert {p.name for p in kept.iterdir()} == {"config.json", "summary.json",
                                                "metrics.jsonl", "host.json", "SHA256SUMS"}
    archive.check(kept)
    for name in ("config.json", "metrics.jsonl"):
      assert (kept / name).read_bytes() == (workdir / name).read_bytes()


def test_a_new_machine_restores_the_kept_runs_and_trains_none_of_them(tmp_path, tiny_budget):
  store = tmp_path / "kept"
  _sweep(tiny_budget, tmp_path / "old", store)
  fresh = tmp_path / "new"
  restored = archive.restore(_workdirs(tiny_budget, fresh), store)
  assert len(restored) == 6
  assert {p.status for p in plan_sweep(E1, tiny_budget, fresh)} == {"complete"}
  assert _sweep(tiny_budget, fresh, store).calls == []
  assert archive.restore(_workdirs(tiny_budget, fresh), store) == []  # Already there.


def test_restore_leaves_a_run_directory_that_holds_a_run(tmp_path, tiny_budget):
  store = tmp_path / "kept"
  _sweep(tiny_budget, tmp_path / "old", store)
  fresh = tmp_path / "new"
  workdirs = _workdirs(tiny_budget, fresh)
  partial, locked = workdirs[0], workdirs[1]
  partial.mkdir(parents=True)
  records.write_config(partial, E1.runs(tiny_budget)[0].config)  # A partial run: kept.
  locked.mkdir(parents=True)
  (locked / ".lock").write_text("")  # Nothing but a lock file: no run, restored.
  restored = archive.restore(workdirs, store)
  assert partial.name not in restored and locked.name in restored
  assert not (partial / "summary.json").exists() and (locked / "summary.json").exists()


def test_a_damaged_kept_run_is_trained_again_and_kept_anew(tmp_path, tiny_budget):
  """Records damaged when they were kept (their checksums match): the sweep's own checks
  find them, as they would in the runs directory."""
  store = tmp_path / "kept"
  _sweep(tiny_budget, tmp_path / "old", store)
  name = E1.runs(tiny_budget)[2].name
  (store / name / "metrics.jsonl").write_text('{"epoch": 1, "val_accuracy": 0.5')  # Cut off.
  archive._copy_whole(store / name, store / name)  # Kept so, with matching sums.
  archive.check(store / name)
  fresh = tmp_path / "new"
  archive.restore(_workdirs(tiny_budget, fresh), store)
  assert [p.status for p in plan_sweep(E1, tiny_budget, fresh)].count("damaged") == 1
  fake = _sweep(tiny_budget, fresh, store)
  assert fake.calls == [(name, False)]
  records.read_metrics(store / name)  # The kept copy is the new, whole one.
  assert not list(store.glob(".*"))  # No staging or old copy left behind.


@pytest.mark.parametrize("damage, message", [
    (lambda kept: (kept / "summary.json").write_text('{"test_accuracy": 0.95}'),
     "summary.json does not match its SHA-256 in SHA256SUMS"),
    (lambda kept: (kept / "metrics.jsonl").unlink(), "metrics.jsonl is missing"),
    (lambda kept: (kept / "notes.txt").write_text("x"), "notes.txt is not in SHA256SUMS"),
    (lambda kept: (kept / "SHA256SUMS").unlink(), "SHA256SUMS is missing"),
    (lambda kept: (kept / "SHA256SUMS").write_text("garbage\n"),
     "SHA256SUMS, line 1: not 'SHA256  FILE'"),
])
def test_a_kept_run_that_does_not_match_its_checksums_is_named_and_not_copied(
    tmp_path, tiny_budget, damage, message):
  store = tmp_path / "kept"
  _sweep(tiny_budget, tmp_path / "old", store)
  name = E1.runs(tiny_budget)[1].name
  damage(store / name)  # A number changed by hand is as damaged as a truncated file.
  logged = []
  fresh = tmp_path / "new"
  restored = archive.restore(_workdirs(tiny_budget, fresh), store, log=logged.append)
  assert name not in restored and len(restored) == 5
  (line,) = logged
  assert line.startswith(f"{name}: the kept copy is damaged (") and message in line
  assert not (fresh / "tiny" / E1.schedule / name).exists()
  fake = _sweep(tiny_budget, fresh, store)  # Trained again, and kept anew.
  assert fake.calls == [(name, False)]
  archive.check(store / name)


def _edit_summary(workdir):  # Still a valid summary: only a checksum can tell.
  summary = records.read_summary(workdir)
  records.write_summary(workdir, {**summary, "test_accuracy": 0.75})


@pytest.mark.parametrize("damage, message", [
    (_edit_summary, "summary.json differs from the kept copy in "),
    (lambda workdir: (workdir / "host.json").write_text(
        (workdir / "host.json").read_text().replace('"', "'", 1)),
     "host.json differs from the kept copy in "),
    (lambda workdir: records.append_step(workdir, {"step": 1, "loss": 1.0}),
     "steps.jsonl is not in the kept copy in "),
    (lambda workdir: (workdir / "host.json").unlink(),
     "host.json is missing; the kept copy in "),
])
def test_a_run_that_differs_from_its_kept_copy_is_damaged_left_out_and_trained_again(
    tmp_path, tiny_budget, damage, message, capsys, monkeypatch):
  """The runs directory has no checksums of its own: its kept copy's catch a run changed
  after it was kept, however plausible the change."""
  monkeypatch.setitem(BUDGETS, tiny_budget.name, tiny_budget)
  store, runs = archive.archive_of(tmp_path, E1, tiny_budget), tmp_path / "runs"
  _sweep(tiny_budget, runs, store)
  name = E1.runs(tiny_budget)[3].name
  workdir = _workdirs(tiny_budget, runs)[3]
  damage(workdir)
  assert {p.status for p in plan_sweep(E1, tiny_budget, runs)} == {"complete"}  # Unaided.
  planned = plan_sweep(E1, tiny_budget, runs, store)
  assert [p.status for p in planned].count("damaged") == 1
  assert planned[3].status == "damaged" and message in planned[3].problem
  assert planned[3].problem.endswith("changed after it was kept")
  # --report-only leaves it out, and keeps the kept copy as it was.
  before = (store / name / "SHA256SUMS").read_bytes()
  assert cli_main(["e1", "--budget", "tiny", "--runs-dir", str(runs), "--results-dir",
                   str(tmp_path), "--report-only"]) == 0
  assert f"{name}: left out of the report, its records are damaged" in capsys.readouterr().err
  assert "- **Runs complete:** 5 of 6; not run yet: " + name in (
      tmp_path / E1.slug / "results.md").read_text()
  assert (store / name / "SHA256SUMS").read_bytes() == before
  # A sweep trains it again, keeps the new run, and then the two agree.
  assert _sweep(tiny_budget, runs, store).calls == [(name, False)]
  assert archive.mismatch(workdir, store / name) is None
  assert {p.status for p in plan_sweep(E1, tiny_budget, runs, store)} == {"complete"}


def test_a_damaged_kept_copy_of_a_complete_run_is_kept_anew_without_training(tmp_path,
                                                                             tiny_budget):
  store, runs = tmp_path / "kept", tmp_path / "runs"
  _sweep(tiny_budget, runs, store)
  name = E1.runs(tiny_budget)[0].name
  (store / name / "summary.json").write_text('{"test_accuracy": 0.95}')
  assert archive.mismatch(_workdirs(tiny_budget, runs)[0], store / name) is None  # No basis.
  assert {p.status for p in plan_sweep(E1, tiny_budget, runs, store)} == {"complete"}
  assert _sweep(tiny_budget, runs, store).calls == []
  archive.check(store / name)
  assert archive.mismatch(_workdirs(tiny_budget, runs)[0], store / name) is None
  (store / name / "metrics.jsonl").unlink()  # And by --report-only's store.
  assert archive.store_missing(_workdirs(tiny_budget, runs), store) == [name]
  archive.check(store / name)


def test_report_only_keeps_the_runs_it_reads(tmp_path, tiny_budget, monkeypatch):
  monkeypatch.setitem(BUDGETS, tiny_budget.name, tiny_budget)
  _sweep(tiny_budget, tmp_path / "runs", None)
  out = tmp_path / "out"
  assert cli_main(["e1", "--budget", "tiny", "--runs-dir", str(tmp_path / "runs"),
                   "--results-dir", str(out), "--report-only"]) == 0
  assert len(list(archive.archive_of(out, E1, tiny_budget).iterdir())) == 6


def _committed_archives():
  for key, experiment in EXPERIMENTS.items():
    for kept in sorted((REPO / "experiments" / "results" / experiment.slug / "runs").glob("*")):
      yield pytest.param(key, kept.name, id=f"{key}-{kept.name}")


@pytest.mark.parametrize("key, budget", list(_committed_archives()))
def test_the_committed_report_is_rendered_again_from_the_committed_runs(tmp_path, key, budget,
                                                                       capsys, monkeypatch):
  """Every committed section with kept runs comes back byte for byte from those runs alone,
  on a machine that never trained them (its home directory here: the commands name the
  runs directory as "$HOME/maxnorm-runs/claims")."""
  monkeypatch.setenv("HOME", str(tmp_path))
  slug = EXPERIMENTS[key].slug
  shutil.copytree(REPO / "experiments" / "results" / slug, tmp_path / "out" / slug)
  path = tmp_path / "out" / slug / "results.md"
  before = read_sections(path)[budget]
  assert cli_main([key, "--budget", budget, "--runs-dir",
                   str(tmp_path / "maxnorm-runs" / "claims"), "--results-dir",
                   str(tmp_path / "out"), "--data-dir", "../shared/tensorflow_datasets",
                   "--report-only"]) == 0
  assert "complete runs copied from" in capsys.readouterr().out

  def without_results_dir(section):  # The one flag that names this test's directory.
    return section.replace(' --results-dir "$HOME/out"', '')
  assert without_results_dir(read_sections(path)[budget]) == before
