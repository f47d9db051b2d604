"""One run's results page: ``results.md``, its figures, and the run's small files.

    python -m experiments.cifar10.report --workdir W --out experiments/results/article

reads a finished run's ``config.json``, ``metrics.jsonl``, ``steps.jsonl``
(if it was logged), ``summary.json`` and ``console.log`` (if the run's console
was saved there), and writes into ``--out``:

* copies of those files (never the checkpoints), the console log with the
  progress bars' carriage-return redraws reduced to their last state;
* ``accuracy_loss.png``: train and validation accuracy and loss per epoch;
* ``dense1_norms.png``: the constrained layer's largest and mean neuron norm
  against ``c``, per epoch and at every logged step;
* ``fraction_at_bound.png``: the share of constrained neurons at the bound,
  per epoch (mean over its steps) and at every logged step;
* ``results.md``: the command, the machine, wall time, test accuracy, the
  per-epoch table, and a reading of whether and when the constraint bound,
  computed from the numbers.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from experiments import plotting
from experiments.cifar10 import records
from experiments.cifar10.models import DENSE1_KERNEL
from experiments.machine import cpu_model
from experiments.markdown import Column, columns_table, number

__all__ = ["binding", "check_records", "clean_console", "main", "render"]

CONSOLE = "console.log"


def clean_console(text: str) -> str:
  """The console as a reader would have seen it: each carriage-return redraw of a
  progress bar replaced by its final state."""
  lines = []
  for line in text.rstrip("\n").split("\n"):  # Not splitlines(): it splits at "\r" too.
    parts = [p for p in line.split("\r") if p.strip()]
    lines.append(parts[-1] if parts else "")
  return "\n".join(lines) + "\n"


def binding(metrics: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]],
            c: float | None) -> str:
  """Whether and when the constraint bound, in words, from the run's numbers."""
  if c is None:
    return "The run had no constraint."
  bound_epochs = [r["epoch"] for r in metrics if (r.get("fraction_at_bound") or 0) > 0]
  bound_steps = [s for s in steps if (s.get("fraction_at_bound") or 0) > 0]
  largest = max((n for n in (_dense1(r, "max") for r in metrics) if n is not None),
                default=None)
  if not bound_epochs and not bound_steps:
    return (f"**c = {c:g} never bound.** No step of any epoch projected a neuron "
            f"(`fraction_at_bound` was 0 in every epoch"
            + (" and at every logged step" if steps else "") + "); "
            + (f"the largest neuron norm of {DENSE1_KERNEL} after any epoch was "
               f"{largest:.3f}, below c" if largest is not None else
               f"no neuron norm of {DENSE1_KERNEL} was recorded") + ". The constraint "
            "changed no weight, so this run is the unconstrained recipe up to float "
            "rounding.")
  first_epoch = bound_epochs[0] if bound_epochs else None
  parts = [f"**c = {c:g} bound from epoch {first_epoch} on**" if first_epoch else
           f"**c = {c:g} bound at some logged steps**"]
  if bound_steps:
    first = bound_steps[0]
    parts.append(f"the first logged step with a neuron at the bound was step {first['step']} "
                 f"(epoch {first['epoch']}; fraction at bound "
                 f"{first['fraction_at_bound']:.4f})")
  last = metrics[-1]
  parts.append(f"in the last epoch, on average {100 * (last.get('fraction_at_bound') or 0):.2f}% "
               f"of the {DENSE1_KERNEL} neurons were at the bound after a step")
  return "; ".join(parts) + "."


def _plot(path: pathlib.Path, title: str, panels: list[tuple[str, list[tuple]]],
          hline: float | None = None) -> pathlib.Path:
  fig, axes = plotting.subplots(len(panels), (5 * len(panels), 3.6))
  axes = [axes] if len(panels) == 1 else list(axes)
  for ax, (ylabel, curves) in zip(axes, panels):
    for xs, ys, style in curves:
      plotting.curve(ax, xs, ys, style)
    if hline is not None and "norm" in ylabel:
      ax.axhline(hline, color="gray", linestyle=":", label=f"c = {hline:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    plotting.legend(ax, fontsize=8)
  return plotting.save(fig, path, title)


def _figures(out: pathlib.Path, metrics: list[dict[str, Any]], steps: list[dict[str, Any]],
             c: float | None, label: str) -> list[str]:
  epochs = [r["epoch"] for r in metrics]
  steps_per_epoch = metrics[0]["step"] / metrics[0]["epoch"]
  at = [s["step"] / steps_per_epoch for s in steps if s.get("neuron_norms")]

  def stat(rows, key):
    return [_dense1(r, key) for r in rows]
  logged = [s for s in steps if s.get("neuron_norms")]
  names = []
  names.append(_plot(out / "accuracy_loss.png", label, [
      ("accuracy", [(epochs, [r["train_accuracy"] for r in metrics],
                     dict(marker="o", label="train (running mean over the epoch)")),
                    (epochs, [r["val_accuracy"] for r in metrics], dict(marker="o",
                                                                         label="validation"))]),
      ("loss", [(epochs, [r["train_loss"] for r in metrics], dict(marker="o", label="train")),
                (epochs, [r["val_loss"] for r in metrics], dict(marker="o",
                                                                 label="validation"))])]).name)
  names.append(_plot(out / "dense1_norms.png", label, [
      (f"{DENSE1_KERNEL} neuron norm", [
          (at, stat(logged, "max"), dict(color="C0", alpha=0.5, linewidth=1,
                                         label="largest, logged steps")),
          (at, stat(logged, "mean"), dict(color="C1", alpha=0.5, linewidth=1,
                                          label="mean, logged steps")),
          (epochs, stat(metrics, "max"), dict(color="C0", marker="o", linestyle="none",
                                              label="largest, end of epoch")),
          (epochs, stat(metrics, "mean"), dict(color="C1", marker="o", linestyle="none",
                                               label="mean, end of epoch"))])],
      hline=c).name)
  names.append(_plot(out / "fraction_at_bound.png", label, [
      ("fraction of neurons at the bound", [
          ([s["step"] / steps_per_epoch for s in steps],
           [s.get("fraction_at_bound") for s in steps],
           dict(color="C2", alpha=0.5, linewidth=1, label="logged steps")),
          (epochs, [r.get("fraction_at_bound") for r in metrics],
           dict(color="C2", marker="o", linestyle="none", label="mean over the epoch"))])]).name)
  return names


def _dense1(row: dict[str, Any], stat: str) -> float | None:
  return ((row.get("neuron_norms") or {}).get(DENSE1_KERNEL) or {}).get(stat)


# The per-epoch table of a results page: one row of metrics.jsonl per epoch.
_PER_EPOCH: list[Column[dict[str, Any]]] = [
    Column("epoch", lambda r: str(r["epoch"])),
    Column("train loss", lambda r: number(r["train_loss"], ".4f")),
    Column("train acc", lambda r: number(r["train_accuracy"], ".4f")),
    Column("val loss", lambda r: number(r["val_loss"], ".4f")),
    Column("val acc", lambda r: number(r["val_accuracy"], ".4f")),
    Column("fraction at bound", lambda r: number(r.get("fraction_at_bound"), ".4f")),
    Column(f"{DENSE1_KERNEL} max norm", lambda r: number(_dense1(r, "max"), ".3f")),
    Column("mean norm", lambda r: number(_dense1(r, "mean"), ".3f")),
    Column("s", lambda r: f"{r['seconds']:.0f}"),
    Column("img/s", lambda r: f"{r['img_per_s']:.1f}"),
]


class ReportError(ValueError):
  """The page cannot be written where it was asked for; nothing was written."""


# The fields the page reads, in one place: file -> (key, what it must be, may it be null,
# must it be there). Checked before anything is written, so that a record that is valid
# JSON but lacks a field, or holds a null where a number is needed, is one clear line.
_INTEGER = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
_NUMBER = ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
_TEXT = ("a string", lambda v: isinstance(v, str))
_OBJECT = ("a JSON object", lambda v: isinstance(v, dict))
_FIELDS: dict[str, list[tuple[str, tuple[str, Any], bool, bool]]] = {
    records.CONFIG: [("epochs", _INTEGER, False, True), ("batch_size", _INTEGER, False, True),
                     ("max_norm", _NUMBER, True, True)],
    records.SUMMARY: [("steps", _INTEGER, False, True), ("num_params", _INTEGER, False, True),
                      ("test_accuracy", _NUMBER, True, True), ("test_loss", _NUMBER, True, True),
                      ("val_accuracy", _NUMBER, True, True), ("backend", _TEXT, False, True),
                      ("num_devices", _INTEGER, False, True),
                      ("jax_version", _TEXT, False, True), ("malloc", _TEXT, False, False)],
    records.METRICS: [("train_loss", _NUMBER, True, True), ("train_accuracy", _NUMBER, True, True),
                      ("val_loss", _NUMBER, True, True), ("val_accuracy", _NUMBER, True, True),
                      ("seconds", _NUMBER, False, True), ("img_per_s", _NUMBER, False, True),
                      ("fraction_at_bound", _NUMBER, True, False),
                      ("neuron_norms", _OBJECT, True, False)],
    records.STEPS: [("epoch", _INTEGER, False, True), ("fraction_at_bound", _NUMBER, True, False),
                    ("neuron_norms", _OBJECT, True, False)],
}


def _check_row(where: str, name: str, row: dict[str, Any]) -> None:
  for key, (kind, fits), nullable, required in _FIELDS[name]:
    if key not in row:
      if required:
        raise records.RecordsError(f"{where}: {key!r} is missing")
      continue
    value = row[key]
    if value is None and nullable:
      continue
    if not fits(value):
      raise records.RecordsError(f"{where}: {key!r} is {'null' if value is None else repr(value)}"
                                 f", not {kind}")
  for layer, stats in (row.get("neuron_norms") or {}).items():
    if not isinstance(stats, dict) or not all(
        v is None or _NUMBER[1](v) for v in (stats.get("max"), stats.get("mean"))):
      raise records.RecordsError(f"{where}: the neuron norms of {layer!r} are {stats!r}, not "
                                 f"an object with numbers 'max' and 'mean'")


def _row_lines(path: pathlib.Path) -> list[int]:
  """The line number of each row of a JSON Lines file (blank lines hold no row)."""
  return [n for n, line in enumerate(path.read_text().split("\n")[:-1], 1) if line.strip()]


def check_records(workdir: pathlib.Path, config: dict[str, Any], summary: dict[str, Any],
                  metrics: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]) -> None:
  """Checks that the run's records hold every field the page reads, of the right kind.

  Raises:
    records.RecordsError: "FILE: what is wrong", or "FILE, line N: what is wrong".
  """
  _check_row(str(workdir / records.CONFIG), records.CONFIG, config)
  if config["epochs"] < 1 or config["batch_size"] < 1:
    raise records.RecordsError(f"{workdir / records.CONFIG}: 'epochs' and 'batch_size' must "
                               f"be >= 1")
  _check_row(str(workdir / records.SUMMARY), records.SUMMARY, summary)
  if not metrics:
    raise records.RecordsError(f"{workdir / records.METRICS}: no epoch's row, next to a "
                               f"{records.SUMMARY}")
  for name, rows in ((records.METRICS, metrics), (records.STEPS, steps)):
    for line, row in zip(_row_lines(workdir / name) if rows else [], rows):
      _check_row(f"{workdir / name}, line {line}", name, row)
      if name == records.METRICS and row["epoch"] < 1:
        raise records.RecordsError(f"{workdir / name}, line {line}: 'epoch' must be >= 1")


def render(workdir: str | pathlib.Path, out: str | pathlib.Path, *, commands: Sequence[str],
           host: str | None = None, notes: str = "") -> pathlib.Path:
  """Writes ``out/results.md``, its figures and copies of the run's small files.

  Args:
    workdir: the run's directory (it must hold a ``summary.json``).
    out: where the page goes (created if missing).
    commands: the command(s) that made the run, in order.
    host: the machine, for the page (default: this machine's CPU model).
    notes: extra Markdown for the page (e.g. how the machine was shared).

  Raises:
    FileNotFoundError: the run is not finished (no ``summary.json``).
    ReportError: ``out`` is a file, or ``workdir`` itself.
    records.RecordsError: a record of the run is damaged, or lacks a field the page reads
      (:func:`check_records`): "FILE, line N: ..." or "FILE: ...".
  """
  workdir, out = pathlib.Path(workdir), pathlib.Path(out)
  if out.exists() and not out.is_dir():
    raise ReportError(f"--out {out} exists and is not a directory. Nothing was written.")
  if out.resolve() == workdir.resolve():
    raise ReportError(f"--out {out} is the run's --workdir: the page would replace the run's "
                      f"own records. Choose another directory. Nothing was written.")
  summary = records.read_summary(workdir)
  if summary is None:
    raise FileNotFoundError(f"{workdir} holds no {records.SUMMARY}: the run has not finished.")
  config = records.read_config(workdir)
  if config is None:
    raise FileNotFoundError(f"{workdir} holds no {records.CONFIG}.")
  metrics, steps = records.read_metrics(workdir), records.read_steps(workdir)
  check_records(workdir, config, summary, metrics, steps)
  out.mkdir(parents=True, exist_ok=True)
  for name in (records.CONFIG, records.METRICS, records.STEPS, records.SUMMARY):
    if (workdir / name).exists():
      shutil.copyfile(workdir / name, out / name)
  if (workdir / CONSOLE).exists():
    with open(workdir / CONSOLE, newline="", errors="replace") as f:  # Keep the "\r"s.
      (out / CONSOLE).write_text(clean_console(f.read()))
  c = config.get("max_norm")
  host = host or cpu_model()
  label = (f"{config['epochs']} epochs x {summary.get('steps', 0) // max(config['epochs'], 1)} "
           f"steps of {config['batch_size']} | {host}")
  figures = _figures(out, metrics, steps, c, label)
  wall = sum(r["seconds"] for r in metrics)
  per_epoch = columns_table(_PER_EPOCH, metrics)
  text = "\n\n".join(filter(None, [
      "# The article's recipe, end to end",
      "```bash\n" + "\n".join(commands) + "\n```",
      "\n".join([
          f"- **Machine:** {host}; backend {summary.get('backend')}, "
          f"{summary.get('num_devices')} device(s); jax {summary.get('jax_version')}; "
          f"malloc {summary.get('malloc', 'system')}.",
          f"- **Budget:** {config['epochs']} epochs, {summary.get('steps')} steps of "
          f"{config['batch_size']:,}; the run's own settings are in `config.json`.",
          f"- **Wall time of the epochs (training and validation):** {wall / 3600:.2f} h "
          f"({wall:,.0f} s); per-epoch times are in the table.",
          f"- **Test accuracy:** {number(summary.get('test_accuracy'), '.4f')} (test loss "
          f"{number(summary.get('test_loss'), '.4f')}) of the "
          f"{summary.get('num_params', 0):,}-parameter network; last validation accuracy "
          f"{number(summary.get('val_accuracy'), '.4f')}.",
      ]),
      "## Does the constraint bind?\n\n" + binding(metrics, steps, c),
      "## Per epoch\n\nTrain loss and accuracy are running means over the epoch's batches; "
      "fraction at bound is the mean over the epoch's steps of the share of constrained "
      "neurons the projection rescaled; norms are after the epoch's last step.\n\n" + per_epoch,
      "\n\n".join(f"![{name}]({name})" for name in figures),
      notes,
  ])) + "\n"
  path = out / "results.md"
  path.write_text(text)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.cifar10.report",
                              description="Write a finished run's results page.")
  p.add_argument("--workdir", required=True, help="the run's directory")
  p.add_argument("--out", required=True, help="where results.md and its files go")
  p.add_argument("--command", action="append", default=[], dest="commands",
                 help="a command that made the run (repeat for each, e.g. a resume)")
  p.add_argument("--host", help="the machine (default: this one's CPU model)")
  p.add_argument("--notes", default="", help="a Markdown file to append to the page")
  args = p.parse_args(argv)
  notes = pathlib.Path(args.notes).read_text() if args.notes else ""
  try:
    path = render(args.workdir, args.out, commands=args.commands, host=args.host, notes=notes)
  except (FileNotFoundError, ReportError, records.RecordsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
