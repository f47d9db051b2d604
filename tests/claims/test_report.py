"""results.md: the facts of a section, its per-run commands, and merging sections by budget.

The experiment here is a toy one, defined in this file: the report machinery
needs nothing else from an experiment than its :class:`Experiment` fields.
"""

import dataclasses
import shlex

import pytest

from experiments import plotting
from experiments.cifar10 import cli
from experiments.claims.budgets import BUDGETS
from experiments.claims.experiment import Experiment, Plot
from experiments.claims.report import SectionShrinkError, read_sections, render_report
from experiments.claims.runs import make_run

PNG = b"\x89PNG\r\n\x1a\n"
CPU = BUDGETS["cpu"]


def _toy_plot(results, path, label):
  fig, ax = plotting.subplots(1, (2, 2))
  ax.plot([r.get("test_accuracy") for r in results if r.complete])
  return plotting.save(fig, path, label)


TOY = Experiment(
    key="toy", slug="toy", title="Toy: two seeds", claim="A claim about nothing.",
    schedule="regular",
    runs=lambda budget: [make_run(budget, "regular", {"seed": s}, seed=s) for s in (0, 1)],
    tables=lambda results, budget: [f"toy table of {sum(r.complete for r in results)} runs"],
    reading=lambda results: "- a computed reading.",
    plots=(Plot("toy", _toy_plot),))


@pytest.fixture
def toy_runs(tmp_path, fabricate, results_of):
  """``toy_runs(budget, n)``: the toy's runs under ``budget``, the first ``n`` complete
  (made once; later calls read them back)."""
  def make(budget=CPU, n=2):
    runs = results_of(TOY, budget, tmp_path / "runs")
    for i, r in enumerate(runs[:n]):
      if r.complete:
        continue
      fabricate(r.workdir, r.spec, val=0.4, test=0.41 + i / 100, seconds=1800.0 + 1800 * i,
                host={"cpu_model": "Test CPU 9000", "cpu_count": 2})
    return results_of(TOY, budget, tmp_path / "runs")
  return make


def _section(path, budget):
  return read_sections(path)[budget]


def test_a_section_states_budget_seeds_hardware_compute_and_each_command(tmp_path, toy_runs):
  results = toy_runs()
  path = render_report(TOY, CPU, results, tmp_path / "out", command="sweep command",
                       data_dir="/data")
  text = path.read_text()
  assert path == tmp_path / "out" / "toy" / "results.md"
  assert text.startswith("# Toy: two seeds\n\nA claim about nothing.")
  section = _section(path, "cpu")
  assert f"- **Budget:** {CPU.describe('regular')}. Every number" in section
  assert f"- **Why this budget:** {CPU.rationale}" in section
  assert "- **Seeds:** 0, 1." in section
  assert "- **Hardware:** Test CPU 9000, 2 cores | JAX backend cpu (1 x cpu), jax 0.10.2." in (
      section)
  assert ("- **Compute:** 5,400 s (1.5 h) over the 2 complete runs: the sum of each run's "
          "`total_seconds`, which is wall time on a machine shared with other jobs") in section
  assert "- **Runs complete:** 2 of 2." in section
  assert "```bash\nsweep command\n```" in section
  assert "toy table of 2 runs" in section and "- a computed reading." in section
  assert "![toy](toy.png)" not in section and "![toy](cpu_toy.png)" in section
  assert (path.parent / "cpu_toy.png").read_bytes()[:8] == PNG
  commands = section.split("```bash\n")[-1].split("\n```")[0].splitlines()
  for command, r in zip(commands, results, strict=True):
    assert command == cli.equivalent_command(
        dataclasses.replace(r.spec.config, data_dir="/data"), r.workdir)
    invocation = cli.parse(shlex.split(command)[3:])
    assert invocation.config == dataclasses.replace(r.spec.config, data_dir="/data")
    assert invocation.workdir == str(r.workdir)


def test_incomplete_runs_are_listed_not_tabled(tmp_path, toy_runs):
  results = toy_runs(n=1)
  section = _section(render_report(TOY, CPU, results, tmp_path / "out", command="c"), "cpu")
  assert f"- **Runs complete:** 1 of 2; not run yet: {results[1].spec.name}." in section
  assert "toy table of 1 runs" in section
  assert "over the 1 complete runs" in section


def test_nothing_complete_renders_without_a_table_or_plots(tmp_path, toy_runs):
  section = _section(render_report(TOY, CPU, toy_runs(n=0), tmp_path / "out", command="c"),
                     "cpu")
  assert "No run of this experiment is complete" in section
  assert "toy table" not in section and "Hardware:** no complete run yet" in section
  assert not list((tmp_path / "out").rglob("*.png"))


def test_a_second_budget_gets_its_own_section_and_keeps_the_first(tmp_path, toy_runs):
  out = tmp_path / "out"
  render_report(TOY, CPU, toy_runs(CPU), out, command="cpu command")
  full = BUDGETS["full"]
  render_report(TOY, full, toy_runs(full, n=0), out, command="full command")
  path = render_report(TOY, CPU, toy_runs(CPU), out, command="cpu command")  # Re-render.
  text = path.read_text()
  assert text.count("<!-- budget:cpu -->") == 1 and text.count("<!-- budget:full -->") == 1
  sections = read_sections(path)
  assert "cpu command" in sections["cpu"] and "toy table of 2 runs" in sections["cpu"]
  assert "full command" in sections["full"] and "toy table" not in sections["full"]


def test_a_section_whose_runs_are_not_here_is_kept_until_some_are(tmp_path, toy_runs,
                                                                  capsys):
  out = tmp_path / "out"
  path = render_report(TOY, CPU, toy_runs(), out, command="first")
  committed = _section(path, "cpu")
  elsewhere = [dataclasses.replace(r, summary=None) for r in toy_runs()]  # None complete here.
  render_report(TOY, CPU, elsewhere, out, command="second")
  assert _section(path, "cpu") == committed
  assert "kept the section already in" in capsys.readouterr().out
  with pytest.raises(SectionShrinkError, match="holds 2 of 2 complete runs, and only 1"):
    render_report(TOY, CPU, elsewhere[:1] + toy_runs()[1:], out, command="third")
  assert _section(path, "cpu") == committed
  render_report(TOY, CPU, elsewhere[:1] + toy_runs()[1:], out, command="third",
                allow_shrink=True)
  assert "third" in _section(path, "cpu") and "Runs complete:** 1 of 2" in (
      _section(path, "cpu"))


def test_notes_appear_under_the_heading(tmp_path, toy_runs):
  (tmp_path / "out" / "toy").mkdir(parents=True)
  (tmp_path / "out" / "toy" / "notes.md").write_text("**Reading (by hand).** Words.\n")
  text = render_report(TOY, CPU, toy_runs(), tmp_path / "out", command="c").read_text()
  assert text.index("**Reading (by hand).** Words.") < text.index("<!-- budget:cpu -->")
