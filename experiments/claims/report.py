"""Each experiment's ``results.md``: one section per budget, merged into one file.

``results.md`` holds one section per budget, between ``<!-- budget:NAME -->``
markers; rendering a budget replaces its own section and keeps the others,
so CPU and GPU numbers live in one file but never in one table. A section
states the budget, why it was chosen, the seeds, the hardware, the compute
used, the sweep command and each run's own command; the experiment's module
supplies the tables, figures and reading. Only complete runs enter a table;
missing ones are listed. Figures are ``<budget>_<name>.png`` beside it.

When no run of a budget is complete here (its runs were made on another
machine), the section already in ``results.md`` is kept as it is.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import textwrap
from collections.abc import Callable, Sequence

from experiments.cifar10.cli import equivalent_command
from experiments.claims.budgets import Budget
from experiments.claims.experiment import Experiment
from experiments.claims.results import RunResult

__all__ = ["NOTES", "RESULTS", "SectionShrinkError", "read_sections", "render_report"]

RESULTS = "results.md"
NOTES = "notes.md"  # Hand-written reading, shown under the heading of results.md.

_SECTION = re.compile(r"<!-- budget:(\S+) -->\n(.*?)\n<!-- /budget:\1 -->", flags=re.S)


class SectionShrinkError(RuntimeError):
  """Re-rendering would replace a section with one of fewer complete runs."""


_RUNS_COMPLETE = re.compile(r"- \*\*Runs complete:\*\* (\d+) of (\d+)")


def read_sections(path: pathlib.Path) -> dict[str, str]:
  """Budget name -> section text of the ``results.md`` at ``path`` ({} if none)."""
  return dict(_SECTION.findall(path.read_text())) if path.exists() else {}


def _hardware(results: Sequence[RunResult]) -> str:
  seen = []
  for r in results:
    if not r.complete:
      continue
    s, h = r.summary or {}, r.host or {}
    text = (f"{h.get('cpu_model', 'CPU model not recorded')}, {s.get('cpu_count')} cores | "
            f"JAX backend {s.get('backend')} ({s.get('num_devices')} x {s.get('device')}), "
            f"jax {s.get('jax_version')}")
    if text not in seen:
      seen.append(text)
  return "; ".join(seen) if seen else "no complete run yet"


def _compute(done: Sequence[RunResult]) -> str:
  seconds = sum(r.get("total_seconds") or 0.0 for r in done)
  return (f"{seconds:,.0f} s ({seconds / 3600:.1f} h) over the {len(done)} complete runs: the "
          f"sum of each run's `total_seconds`, which is wall time on a machine shared with "
          f"other jobs, so not a speed benchmark")


def _section(experiment: Experiment, budget: Budget, results: Sequence[RunResult],
             out_dir: pathlib.Path, command: str, data_dir: str | None) -> str:
  done = [r for r in results if r.complete]
  missing = [r.spec.name for r in results if not r.complete]
  description = budget.describe(experiment.schedule,
                                recipe=False if experiment.sets_recipe else None)
  seeds = sorted({r.spec.labels["seed"] for r in results})
  facts = [f"- **Budget:** {description}. Every number in this section is at this budget."]
  if budget.rationale:
    facts.append(f"- **Why this budget:** {budget.rationale}")
  facts += [
      f"- **Seeds:** {', '.join(map(str, seeds))}.",
      f"- **Hardware:** {_hardware(results)}.",
      f"- **Compute:** {_compute(done)}.",
      f"- **Runs complete:** {len(done)} of {len(results)}"
      + (f"; not run yet: {', '.join(missing)}." if missing else "."),
      "- **Command** (resumable; re-running it skips complete runs and re-renders this file):"]
  parts = [f"## Budget `{budget.name}`", "\n".join(facts), f"```bash\n{command}\n```"]
  if done:
    parts += experiment.tables(results, budget)
    label = textwrap.fill(f"{budget.name}: {description}", 110)
    for plot in experiment.plots:
      path = plot.draw(results, out_dir / f"{budget.name}_{plot.name}.png", label)
      parts.append(f"![{plot.name}]({path.name})")
    reading = experiment.reading(results)
    if reading:
      parts.append(f"What the numbers say (computed from the table):\n\n{reading}")
  else:
    parts.append("No run of this experiment is complete at this budget, so there is no table.")
  commands = "\n".join(
      equivalent_command(dataclasses.replace(r.spec.config, data_dir=data_dir), r.workdir)
      for r in results)
  parts.append(f"<details><summary>Each run as a single command</summary>\n\n```bash\n"
               f"{commands}\n```\n</details>")
  return "\n\n".join(parts)


def render_report(experiment: Experiment, budget: Budget, results: Sequence[RunResult],
                  results_dir: str | pathlib.Path, *, command: str,
                  data_dir: str | None = None, allow_shrink: bool = False,
                  log: Callable[[str], None] = print) -> pathlib.Path:
  """Writes ``<results_dir>/<slug>/results.md`` (this budget's section) and its figures.

  Args:
    experiment: the experiment.
    budget: the budget whose section is (re)written; other budgets' sections stay.
    results: every run of the experiment under ``budget``, complete or not.
    results_dir: root of the results (``experiments/results``).
    command: the sweep command, printed in the report.
    data_dir: the data directory, for the per-run commands.
    allow_shrink: replace a section even with one of fewer complete runs.
    log: where a note goes when the existing section is kept.

  Returns:
    The path of ``results.md``. If no run in ``results`` is complete and the
    file already has a section for ``budget`` (made from runs that are not on
    this machine), that section is kept unchanged.

  Raises:
    SectionShrinkError: the new section would hold fewer complete runs than the
      one in the file (unless ``allow_shrink``); nothing is written then.
  """
  out_dir = pathlib.Path(results_dir) / experiment.slug
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / RESULTS
  sections = read_sections(path)
  if budget.name in sections and not any(r.complete for r in results):
    log(f"no complete run of {experiment.key} at budget {budget.name} here; kept the "
        f"section already in {path}")
  else:
    had = _RUNS_COMPLETE.search(sections.get(budget.name, ""))
    done = sum(r.complete for r in results)
    if had and done < int(had.group(1)) and not allow_shrink:
      raise SectionShrinkError(
          f"{path}'s section for budget {budget.name} holds {had.group(1)} of {had.group(2)} "
          f"complete runs, and only {done} are complete here: re-rendering would drop runs. "
          f"Nothing was changed; point --runs-dir at the runs it was made from, or pass "
          f"--allow-shrink to rewrite it from these.")
    sections[budget.name] = _section(experiment, budget, results, out_dir, command, data_dir)
  header = [f"# {experiment.title}", experiment.claim,
            "Written by `python -m experiments.claims`; one section per compute budget, never "
            "mixed in one table."]
  notes = out_dir / NOTES
  if notes.exists():
    header.append(notes.read_text().strip())
  body = "\n\n".join(f"<!-- budget:{name} -->\n{text}\n<!-- /budget:{name} -->"
                     for name, text in sorted(sections.items()))
  path.write_text("\n\n".join(header) + "\n\n" + body + "\n")
  return path
