"""The command ``python -m experiments.claims {e1,e2,e3} --budget cpu --data-dir D``.

Trains the experiment's runs that are not complete yet (one at a time,
resuming partial ones), deletes complete runs' checkpoints unless
``--keep-checkpoints``, and (re)writes the budget's section of
``experiments/results/<slug>/results.md`` and its plots from every complete
run. Each complete run's records (not its checkpoints) are kept under
``experiments/results/<slug>/runs/`` and copied back into a runs directory that
lacks them (see :mod:`.archive`), so the sweep resumes, and the report renders,
on a machine that never trained them. ``--report-only`` skips training; with no
complete run here or in the archive it keeps the section already there.
Bad flags exit with code 2; a run directory holding another config, missing
data, an unusable checkpoint or a damaged record of a run (``host.json``
included) exit with code 1 and a one-line message, before any report is written. (``__main__.py``
chooses the malloc, then calls :func:`main`.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from experiments.cifar10.checkpoints import CheckpointError
from experiments.cifar10.cli import shell_join
from experiments.cifar10.input_pipeline import DataUnavailableError
from experiments.cifar10.records import RecordsError
from experiments.cifar10.train import WorkdirError
from experiments.claims import archive as run_archive
from experiments.claims.budgets import BUDGETS
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.report import SectionShrinkError, render_report
from experiments.claims.results import RunResult, load_result
from experiments.claims.sweep import RunConflictError, plan_sweep, run_sweep, workdir_of

__all__ = ["build_parser", "main"]

DEFAULT_RUNS_DIR = "runs/claims"
DEFAULT_RESULTS_DIR = "experiments/results"


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
  return value


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m experiments.claims",
      description="Run one experiment on the article's max-norm claims and write its report.")
  p.add_argument("experiment", choices=sorted(EXPERIMENTS),
                 help="; ".join(f"{k}: {e.title}" for k, e in EXPERIMENTS.items()))
  p.add_argument("--budget", choices=sorted(BUDGETS), required=True,
                 help="; ".join(f"{k}: {b.describe('regular')}" for k, b in BUDGETS.items()))
  p.add_argument("--data-dir", dest="data_dir",
                 help="a tfds-prepared copy of CIFAR-10, passed to every run (default: the "
                      "runs' own default, see python -m experiments.cifar10 --help)")
  p.add_argument("--runs-dir", dest="runs_dir", default=DEFAULT_RUNS_DIR,
                 help=f"where runs are trained (default: {DEFAULT_RUNS_DIR}; keep it out of git)")
  p.add_argument("--results-dir", dest="results_dir", default=DEFAULT_RESULTS_DIR,
                 help=f"where results.md and plots go (default: {DEFAULT_RESULTS_DIR})")
  p.add_argument("--keep-checkpoints", action="store_true",
                 help="keep complete runs' checkpoints (about 1 GB each; default: delete)")
  p.add_argument("--max-runs", dest="max_runs", type=_positive_int, metavar="N",
                 help="train at most N runs, then render the report (default: all)")
  p.add_argument("--report-only", action="store_true",
                 help="train nothing; re-render the report from the complete runs (a budget "
                      "with none here keeps its section)")
  p.add_argument("--allow-shrink", action="store_true",
                 help="rewrite the budget's section even if fewer runs are complete here "
                      "than it holds (default: refuse)")
  return p


def _command(args: argparse.Namespace) -> str:
  """The sweep command as a reader would type it (without --report-only)."""
  words = ["python", "-m", "experiments.claims", args.experiment, "--budget", args.budget]
  if args.data_dir:
    words += ["--data-dir", args.data_dir]
  if args.runs_dir != DEFAULT_RUNS_DIR:
    words += ["--runs-dir", args.runs_dir]
  if args.results_dir != DEFAULT_RESULTS_DIR:
    words += ["--results-dir", args.results_dir]
  return shell_join(words)


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  experiment, budget = EXPERIMENTS[args.experiment], BUDGETS[args.budget]
  archive = run_archive.archive_of(args.results_dir, experiment, budget)
  try:
    restored = run_archive.restore(
        (workdir_of(args.runs_dir, budget, experiment, spec) for spec in experiment.runs(budget)),
        archive)
    if restored:
      print(f"{len(restored)} complete runs copied from {archive} into {args.runs_dir}")
    if args.report_only:
      plan = plan_sweep(experiment, budget, args.runs_dir, archive)
    else:
      plan = run_sweep(experiment, budget, args.runs_dir, data_dir=args.data_dir,
                       keep_checkpoints=args.keep_checkpoints, max_runs=args.max_runs,
                       archive=archive)
    results = []
    for run in plan:
      if run.status == "damaged":  # Only --report-only leaves one: never read into a table.
        print(f"{run.spec.name}: left out of the report, its records are damaged "
              f"({run.problem}); a sweep trains it again", file=sys.stderr)
        results.append(RunResult(run.spec, run.workdir, None, [], []))
      else:
        results.append(load_result(run.spec, run.workdir))
  except (RunConflictError, DataUnavailableError, CheckpointError, WorkdirError,
          RecordsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\ninterrupted; run the same command again to resume", file=sys.stderr)
    return 130
  try:
    path = render_report(experiment, budget, results, args.results_dir, command=_command(args),
                         data_dir=args.data_dir, allow_shrink=args.allow_shrink)
  except SectionShrinkError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if args.report_only:  # A sweep keeps each run as it completes.
    run_archive.store_missing([p.workdir for p in plan if p.status == "complete"], archive)
  print(f"{sum(r.complete for r in results)} of {len(results)} runs complete; report: {path}")
  return 0
