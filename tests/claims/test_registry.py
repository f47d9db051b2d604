"""The registry: one module per experiment, named after its results directory."""

import pathlib
import sys
import types

import pytest

from experiments.claims import registry
from experiments.claims.budgets import BUDGETS
from experiments.claims.experiment import Experiment
from experiments.claims.registry import EXPERIMENTS, MODULES, get_experiment
from experiments.claims.report import read_sections, render_report

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "results"


def test_each_module_is_one_experiment_with_a_results_directory():
  assert [e.slug for e in EXPERIMENTS.values()] == list(MODULES)
  assert sorted(EXPERIMENTS) == ["e1", "e2", "e3", "e4"]
  for e in EXPERIMENTS.values():
    assert (RESULTS / e.slug / "results.md").exists()
    assert e.claim and e.title.startswith(e.key.upper() + ":") and e.plots


def test_a_module_whose_slug_is_not_its_name_is_refused(monkeypatch):
  module = types.ModuleType("experiments.claims.e9_other")
  module.EXPERIMENT = Experiment(key="e9", slug="e9_elsewhere", title="E9", claim="",
                                 schedule="regular", runs=lambda b: [],
                                 tables=lambda rs, b: [], reading=lambda rs: "")
  monkeypatch.setitem(sys.modules, "experiments.claims.e9_other", module)
  with pytest.raises(ValueError, match="slug 'e9_elsewhere'; it must be the module's name"):
    registry.load_experiment("e9_other")


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match=r"Unknown experiment 'e9'; choose from \['e1', 'e2', "
                                       r"'e3', 'e4'\]"):
    get_experiment("e9")


@pytest.mark.parametrize("key", sorted(EXPERIMENTS))
def test_each_experiment_renders_a_cut_short_sweep_of_one_diverged_run(
    key, tmp_path, fabricate, step_rows, results_of):
  experiment, budget = EXPERIMENTS[key], BUDGETS["cpu-proxy"]
  first = results_of(experiment, budget, tmp_path / "runs")[0]
  fabricate(first.workdir, first.spec, val=0.1, test=0.1, dense_max=[None],
            steps=step_rows(3, 2.3, nan_at=3) if first.spec.config.log_every else (),
            diverged_at=3, steps_run=12)
  results = results_of(experiment, budget, tmp_path / "runs")
  path = render_report(experiment, budget, results, tmp_path / "out", command="c")
  section = read_sections(path)["cpu-proxy"]
  assert f"- **Runs complete:** 1 of {len(results)}; not run yet:" in section
  assert all(f"![{plot.name}](cpu-proxy_{plot.name}.png)" in section
             for plot in experiment.plots)
