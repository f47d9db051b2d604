"""Reading a run back: None-safe accessors for incomplete and diverged runs."""

from experiments.cifar10.configs import get_config
from experiments.claims.budgets import BUDGETS
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.results import dense_name, load_result, row_norm


def _e3_run(tmp_path):
  spec = EXPERIMENTS["e3"].runs(BUDGETS["cpu"])[0]
  return spec, tmp_path / spec.name


def test_an_empty_directory_reads_as_an_incomplete_run(tmp_path):
  spec, workdir = _e3_run(tmp_path)
  r = load_result(spec, workdir)
  assert not r.complete and not r.diverged and r.host is None
  assert (r.metrics, r.steps, r.last_epoch) == ([], [], {})
  assert r.get("test_accuracy") is None and r.train_val_gap is None
  assert r.final_norm() is None and r.steps_trained is None and r.planned_steps is None


def test_a_complete_run_reads_back(tmp_path, fabricate):
  spec, workdir = _e3_run(tmp_path)
  fabricate(workdir, spec, val=0.4, test=0.41, train=0.7, epochs=2, dense_max=[2.0, 3.5],
            host={"cpu_model": "Test CPU", "cpu_count": 2})
  r = load_result(spec, workdir)
  assert r.complete and not r.diverged and r.host["cpu_model"] == "Test CPU"
  assert r.train_accuracy == 0.7 and abs(r.train_val_gap - 0.3) < 1e-12
  assert r.final_norm() == 3.5 and r.final_norm("conv1/kernel", "mean") == 1.0
  # Planned: the config's 1 epoch x the 32 steps per epoch that the metrics rows record.
  assert (r.steps_trained, r.planned_steps) == (64, 32)


def test_a_diverged_run_counts_its_steps_to_the_first_nan(tmp_path, fabricate, step_rows):
  spec, workdir = _e3_run(tmp_path)
  # The loop stops within a read interval: the summary counts steps past the NaN.
  fabricate(workdir, spec, val=0.1, test=0.1, steps=step_rows(5, 2.3, nan_at=5),
            diverged_at=5, steps_run=16)
  r = load_result(spec, workdir)
  assert r.diverged and r.get("steps") == 16 and r.steps_trained == 5
  assert r.steps[-1]["neuron_norms"] is None and row_norm(r.steps[-1]) is None
  assert row_norm(r.steps[-2]) == 8.0


def test_the_dense_layer_is_named_by_its_width():
  narrow, article = get_config("article", dense_features=256), get_config("article")
  assert dense_name(narrow) == "Dense(256)" and dense_name(article) == "Dense(1024)"
  assert dense_name([narrow, article, narrow]) == "Dense(256/1024)"
