"""Run names and configs: one directory per run, and each run's own command."""

import shlex

import pytest

from experiments.cifar10 import cli
from experiments.cifar10.configs import get_config
from experiments.claims.budgets import BUDGETS
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.runs import make_run, run_name


@pytest.mark.parametrize("overrides, name", [
    (dict(), "adam-lr0.0001-c3-dense1-seed0"),
    (dict(max_norm=None, seed=4), "adam-lr0.0001-none-seed4"),
    (dict(max_norm=1.5, constrain="all"), "adam-lr0.0001-c1.5-all-seed0"),
    (dict(optimizer="sgd", learning_rate=0.3, max_norm=None), "sgd0.9-lr0.3-none-seed0"),
    (dict(optimizer="sgd", momentum=0.95, dropout=0.5, constrain="all"),
     "sgd0.95-lr0.0001-drop0.5-c3-all-seed0"),
    (dict(dropout=0.5, conv_dropout=0.25, max_norm=None),
     "adam-lr0.0001-convdrop0.25-drop0.5-none-seed0"),
])
def test_run_names_encode_what_differs_between_runs(overrides, name):
  assert run_name(get_config("article", **overrides)) == name


def test_a_run_takes_the_schedule_then_its_settings():
  run = make_run(BUDGETS["cpu-proxy"], "short", {"seed": 2}, learning_rate=0.3, seed=2)
  assert run.config == get_config("article", **BUDGETS["cpu-proxy"].short, learning_rate=0.3,
                                  seed=2)
  assert run.name == "adam-lr0.3-c3-dense1-seed2" and run.labels == {"seed": 2}


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_each_runs_single_command_trains_exactly_its_config(experiment, budget):
  runs = EXPERIMENTS[experiment].runs(BUDGETS[budget])
  assert len({r.name for r in runs}) == len(runs)  # One directory per run.
  for run in runs:
    invocation = cli.parse(shlex.split(cli.equivalent_command(run.config, "w"))[3:])
    assert invocation.config == run.config and invocation.workdir == "w"


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_e1_and_e2_share_every_run_they_both_need(budget):
  e1 = {r.name: r.config for r in EXPERIMENTS["e1"].runs(BUDGETS[budget])}
  e2 = {r.name: r.config for r in EXPERIMENTS["e2"].runs(BUDGETS[budget])}
  common = e1.keys() & e2.keys()
  assert all(e1[name] == e2[name] for name in common)  # One name, one config.
  e2_seeds = {config.seed for config in e2.values()}
  assert common == {name for name, config in e1.items() if config.seed in e2_seeds}


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_runs_of_one_name_have_one_config_across_experiments(budget):
  seen = {}
  for key, experiment in sorted(EXPERIMENTS.items()):
    if experiment.schedule != "regular":
      continue
    for run in experiment.runs(BUDGETS[budget]):
      assert seen.setdefault(run.name, (key, run.config))[1] == run.config, (key, run.name)
