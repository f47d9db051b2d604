"""Each experiment's ``results.md``: budget, hardware, commands, tables, plots.

``results.md`` holds one section per budget, between
``<!-- budget:NAME -->`` markers; rendering a budget replaces its own section
and keeps the others, so CPU and GPU numbers live in one file but never in
one table. Only complete runs enter a table; missing ones are listed.
Plots are ``<budget>_<what>.png`` beside it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import shlex
import statistics
import textwrap
from collections.abc import Callable, Sequence

from experiments.cifar10.configs import Config, get_config
from experiments.claims import plots
from experiments.claims.budgets import Budget
from experiments.claims.results import RunResult
from experiments.claims.specs import Experiment

__all__ = ["equivalent_command", "render_report"]

RESULTS = "results.md"

_CLAIMS = {
    "e1": ("The article's first claim: max-norm (c = 3) on the Dense(1024) kernel regularises "
           "the network. Same recipe, with and without the constraint, several seeds; "
           "validation and test accuracy, the train-validation gap, final neuron norms, time."),
    "e2": ("How the bound c (1, 2, 3, 4, ∞) and where it applies (the Dense(1024) kernel only, "
           "or every kernel including the convolutions) change the result."),
    "e3": ("The article's second claim: max-norm keeps the weights from exploding, including "
           "when the learning rate is too high (the Dropout paper, Srivastava et al. 2014, "
           "pairs max-norm with large learning rates). Adam at 10x, 30x, 100x the article's "
           "1e-4 and SGD with momentum 0.9 at 0.1, each without a constraint, with "
           "max_norm(3) on Dense(1024) (the article), and with max_norm(3) on every kernel "
           "(the Dropout paper); every step logged."),
}

# Config field -> flag of `python -m experiments.cifar10`.
_FLAGS = {
    "epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--learning-rate",
    "lr_decay": "--lr-decay", "optimizer": "--optimizer", "momentum": "--momentum",
    "constrain": "--constrain", "dtype": "--dtype", "seed": "--seed",
    "train_subset": "--train-subset", "eval_subset": "--eval-subset",
    "conv_features": "--conv-features", "dense_features": "--dense-features",
    "log_every": "--log-every", "conv_impl": "--conv-impl",
}


def equivalent_command(config: Config, workdir: str | pathlib.Path,
                       data_dir: str | None = None) -> str:
  """The single-run ``python -m experiments.cifar10`` command that trains ``config``.

  Fields that have no flag and differ from the ``article`` preset are listed in
  a trailing comment.
  """
  article = get_config("article")
  args = ["python", "-m", "experiments.cifar10", "--preset", "article"]
  for field, flag in _FLAGS.items():
    value = getattr(config, field)
    if value != getattr(article, field):
      args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
  if config.max_norm is None:
    args.append("--no-max-norm")
  elif config.max_norm != article.max_norm:
    args += ["--max-norm", f"{config.max_norm:g}"]
  unsupported = [f.name for f in dataclasses.fields(Config) if f.name not in _FLAGS and
                 f.name not in ("max_norm", "data_dir", "download", "keep_checkpoints") and
                 getattr(config, f.name) != getattr(article, f.name)]
  args += ["--workdir", str(workdir)]
  if data_dir:
    args += ["--data-dir", data_dir]
  command = shlex.join(args)
  if unsupported:  # Only tests change these; say so rather than print a wrong command.
    command += "  # and, with no flag: " + ", ".join(
        f"{name}={getattr(config, name)!r}" for name in unsupported)
  return command


# --- Formatting -------------------------------------------------------------


def _num(x: float | None, spec: str = ".3f") -> str:
  return "–" if x is None else "NaN" if isinstance(x, float) and math.isnan(x) else f"{x:{spec}}"


def _mean_std(values: Sequence[float], spec: str = ".3f") -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  if len(values) == 1:
    return _num(values[0], spec)
  return f"{_num(statistics.mean(values), spec)} ± {_num(statistics.stdev(values), spec)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _norm(result: RunResult, layer: str, stat: str) -> float | None:
  return result.last_epoch.get("neuron_norms", {}).get(layer, {}).get(stat)


def _gap(result: RunResult) -> float | None:
  train, val = result.last_epoch.get("train_accuracy"), result.summary.get("val_accuracy")
  return None if train is None or val is None else train - val


def _hardware(results: Sequence[RunResult]) -> str:
  seen = []
  for r in results:
    if not r.complete:
      continue
    s, h = r.summary, r.host or {}
    text = (f"{h.get('cpu_model', 'CPU model not recorded')}, {s.get('cpu_count')} cores | "
            f"JAX backend {s.get('backend')} ({s.get('num_devices')} x {s.get('device')}), "
            f"jax {s.get('jax_version')}")
    if text not in seen:
      seen.append(text)
  return "; ".join(seen) if seen else "no complete run yet"


# --- Per-experiment tables and readings ---------------------------------------


def _e1(results: Sequence[RunResult], budget: Budget) -> tuple[list[str], str]:
  done = [r for r in results if r.complete]
  variants = list(dict.fromkeys(r.spec.labels["variant"] for r in results))
  by_variant = {v: [r for r in done if r.spec.labels["variant"] == v] for v in variants}
  rows = []
  for v, runs in by_variant.items():
    rows.append([
        v, budget.name, str(len(runs)),
        _mean_std([r.summary["val_accuracy"] for r in runs]),
        _mean_std([r.summary["test_accuracy"] for r in runs]),
        _mean_std([r.last_epoch.get("train_accuracy") for r in runs]),
        _mean_std([_gap(r) for r in runs]),
        _mean_std([r.summary["val_loss"] for r in runs]),
        _mean_std([_norm(r, "dense1/kernel", "max") for r in runs], ".2f"),
        _mean_std([_norm(r, "dense1/kernel", "mean") for r in runs], ".2f"),
        _mean_std([r.last_epoch.get("fraction_at_bound") for r in runs], ".3f")
        if any(r.last_epoch.get("fraction_at_bound") is not None for r in runs) else "–",
        _mean_std([r.summary["total_seconds"] for r in runs], ".0f"),
        _mean_std([r.last_epoch.get("img_per_s") for r in runs], ".1f"),
    ])
  table = _table(["variant", "budget", "seeds", "val acc", "test acc", "train acc",
                  "train − val", "val loss", "Dense(1024) max norm", "Dense(1024) mean norm",
                  "fraction at bound", "wall s / run", "train img/s"], rows)
  per_seed = _table(
      ["seed", "variant", "val acc", "test acc", "train acc", "train − val", "val loss",
       "test loss", "Dense(1024) max norm", "fraction at bound", "wall s"],
      [[str(r.spec.labels["seed"]), r.spec.labels["variant"], _num(r.summary["val_accuracy"]),
        _num(r.summary["test_accuracy"]), _num(r.last_epoch.get("train_accuracy")),
        _num(_gap(r)), _num(r.summary["val_loss"], ".4f"), _num(r.summary["test_loss"], ".4f"),
        _num(_norm(r, "dense1/kernel", "max"), ".3f"),
        _num(r.last_epoch.get("fraction_at_bound")), _num(r.summary["total_seconds"], ".0f")]
       for r in sorted(done, key=lambda r: (r.spec.labels["seed"], r.spec.labels["variant"]))])
  tables = [f"Mean ± sample std over seeds. Train accuracy is the running mean over the last "
            f"epoch's batches while training; \"train − val\" is it minus validation accuracy."
            f"\n\n{table}", f"Per seed:\n\n{per_seed}"]
  return tables, _e1_reading(by_variant)


def _e1_reading(by_variant: dict[str, list[RunResult]]) -> str:
  if len(by_variant) != 2 or not all(len(v) >= 2 for v in by_variant.values()):
    return "Fewer than 2 complete seeds per variant: no comparison yet."
  (name_a, a), (name_b, b) = by_variant.items()
  lines = []
  for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
    xa, xb = [r.summary[key] for r in a], [r.summary[key] for r in b]
    diff = statistics.mean(xb) - statistics.mean(xa)
    se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb))
    verdict = ("within 2 standard errors: no detectable difference at this budget"
               if abs(diff) <= 2 * se else "more than 2 standard errors")
    lines.append(f"- {label} accuracy, {name_b} minus {name_a}: {diff:+.4f} "
                 f"(standard error {se:.4f}; {verdict}).")
  seeds_a = {r.spec.labels["seed"]: r for r in a}
  pairs = [(seeds_a[r.spec.labels["seed"]], r) for r in b if r.spec.labels["seed"] in seeds_a]
  identical = [ra.spec.labels["seed"] for ra, rb in pairs
               if (ra.summary["val_loss"], ra.summary["test_loss"])
               == (rb.summary["val_loss"], rb.summary["test_loss"])]
  bound = [r.last_epoch.get("fraction_at_bound") for r in b]
  deltas = [abs(rb.summary["val_accuracy"] - ra.summary["val_accuracy"]) for ra, rb in pairs]
  if deltas:
    lines.append(f"- Same seed, {name_b} vs {name_a}: largest validation-accuracy difference "
                 f"{max(deltas):.4f} over {len(deltas)} seed(s); seeds with bit-identical "
                 f"validation and test loss in both variants: {identical or 'none'}.")
  if bound and all(f == 0 for f in bound):
    lines.append("- The constraint never bound (fraction at bound 0 at every step of every "
                 "constrained run): no neuron of Dense(1024) reached norm 3, so the projection "
                 "changed no weight. Any difference between the variants of one seed is then "
                 "floating-point rounding (the two runs compile different programs), not "
                 "regularisation.")
  return "\n".join(lines)


def _e2(results: Sequence[RunResult], budget: Budget) -> tuple[list[str], str]:
  done = sorted((r for r in results if r.complete),
                key=lambda r: (r.spec.labels["c"], r.spec.labels["placement"]))

  def largest(r: RunResult, prefix: str) -> float | None:
    values = [s["max"] for layer, s in r.last_epoch.get("neuron_norms", {}).items()
              if layer.startswith(prefix) and s["max"] is not None]
    return max(values) if values else None

  rows = [[("∞" if math.isinf(r.spec.labels["c"]) else f"{r.spec.labels['c']:g}"),
           {"dense1": "Dense(1024)", "all": "every kernel"}.get(r.spec.labels["placement"], "–"),
           budget.name, str(r.spec.labels["seed"]), _num(r.summary["val_accuracy"]),
           _num(r.summary["test_accuracy"]), _num(r.last_epoch.get("train_accuracy")),
           _num(_gap(r)), _num(r.summary["val_loss"], ".4f"),
           _num(r.last_epoch.get("fraction_at_bound")),
           _num(_norm(r, "dense1/kernel", "max"), ".2f"), _num(largest(r, "conv"), ".2f"),
           _num(r.summary["total_seconds"], ".0f")] for r in done]
  table = _table(["c", "constrained", "budget", "seed", "val acc", "test acc", "train acc",
                  "train − val", "val loss", "fraction at bound", "Dense(1024) max norm",
                  "conv max norm", "wall s"], rows)
  def name(r: RunResult) -> str:
    return f"c={r.spec.labels['c']:g} on {r.spec.labels['placement']}"

  constrained = [r for r in done if r.spec.config.max_norm is not None]
  bound = [name(r) for r in constrained if (r.last_epoch.get("fraction_at_bound") or 0) > 0]
  idle = [name(r) for r in constrained if r.last_epoch.get("fraction_at_bound") == 0]
  lines = ["- One seed per setting: on 1,000 images an accuracy near 0.4 has a standard error "
           "of about 0.015, so differences below about 0.03 are within noise."]
  if bound:
    lines.append(f"- The constraint bound (fraction at bound > 0) in: {', '.join(bound)}.")
  if idle:
    lines.append(f"- It never bound in: {', '.join(idle)}; those runs changed no weight, so "
                 f"they differ from c = ∞ by floating-point rounding only.")
  return [table], "\n".join(lines) if done else ""


def _blew_up(r: RunResult) -> bool:
  """Some logged batch loss exceeded 10x the loss of the first step."""
  losses = [s["loss"] for s in r.steps]
  first = losses[0] if losses else None
  return first is not None and any(x is not None and x > 10 * first for x in losses)


def _e3_row(r: RunResult) -> list[str]:
  steps = r.steps
  losses = [s["loss"] for s in steps]
  finite = [x for x in losses if x is not None]
  tail = [s for s in steps[-5:] if s["loss"] is not None]
  first = losses[0] if losses else None
  last = steps[-1] if steps else {}
  others = [s["max"] for layer, s in last.get("neuron_norms", {}).items()
            if layer != "dense1/kernel" and s["max"] is not None]
  labels = r.spec.labels
  return [
      labels["optimizer"], f"{labels['lr']:g}", labels["constraint"], str(labels["seed"]),
      f"{r.summary.get('steps', '–')} / {_planned_steps(r) or '–'}",
      f"yes, step {r.summary.get('diverged_at_step')}" if r.diverged else "no",
      "yes" if _blew_up(r) else "no",
      _num(first, ".3f"), _num(max(finite) if finite else None, ".3g"),
      _num(statistics.mean(s["loss"] for s in tail) if tail else None, ".3f"),
      _num(statistics.mean(s["accuracy"] for s in tail) if tail else None, ".3f"),
      _num(r.summary.get("val_accuracy")), _num(r.summary.get("test_accuracy")),
      _num(last.get("neuron_norms", {}).get("dense1/kernel", {}).get("max"), ".3g"),
      _num(max(others) if others else None, ".3g"),
  ]


def _planned_steps(r: RunResult) -> int | None:
  """Epochs x steps per epoch (each metrics row records ``step = epoch * steps_per_epoch``)."""
  if not r.metrics:
    return None
  return r.spec.config.epochs * (r.metrics[0]["step"] // r.metrics[0]["epoch"])


def _e3(results: Sequence[RunResult], budget: Budget) -> tuple[list[str], str]:
  done = [r for r in results if r.complete]
  table = _table(
      ["optimizer", "lr", "constraint", "seed", "steps run / planned", "diverged (NaN/inf)",
       "blow-up (loss > 10x step 1)", "loss, step 1", "max batch loss",
       "loss, last 5 logged", "batch acc, last 5 logged", "val acc", "test acc",
       "Dense(1024) max norm, last", "other layers' max norm, last"],
      [_e3_row(r) for r in done])
  counts = []
  for constraint in dict.fromkeys(r.spec.labels["constraint"] for r in results):
    runs = [r for r in done if r.spec.labels["constraint"] == constraint]
    counts.append(f"{constraint}: {sum(r.diverged for r in runs)} of {len(runs)} diverged "
                  f"(NaN/inf), {sum(_blew_up(r) for r in runs)} blew up")
  reading = ("- " + "; ".join(counts) + ".\n- A diverged run is stopped at its first "
             "non-finite batch loss (its val/test accuracy is that of the NaN weights). "
             "\"Blow-up\": some logged batch loss exceeded 10x the first step's loss.")
  return [f"The last column is the largest neuron norm among conv1-3 and Dense(10) at the "
          f"last logged step.\n\n{table}"], reading


_TABLES: dict[str, Callable[[Sequence[RunResult], Budget], tuple[list[str], str]]] = {
    "e1": _e1, "e2": _e2, "e3": _e3}

# (file suffix, plotting function, kwargs): the figures of each experiment.
_PLOTS: dict[str, list[tuple[str, Callable, dict]]] = {
    "e1": [("accuracy_by_seed", plots.e1_accuracy_by_seed, {}),
           ("final_neuron_norms", plots.e1_final_norms, {})],
    "e2": [("accuracy_vs_c", plots.e2_accuracy_vs_c, {})],
    "e3": [("loss_accuracy", plots.e3_curves, {}),
           ("max_neuron_norms", plots.e3_neuron_norms, {"stat": "max"}),
           ("mean_neuron_norms", plots.e3_neuron_norms, {"stat": "mean"})],
}


def _section(experiment: Experiment, budget: Budget, results: Sequence[RunResult],
             out_dir: pathlib.Path, command: str, data_dir: str | None) -> str:
  done = [r for r in results if r.complete]
  missing = [r.spec.name for r in results if not r.complete]
  description = budget.description if experiment.schedule == "regular" else (
      budget.short_description)
  seeds = sorted({r.spec.labels["seed"] for r in results})
  parts = [
      f"## Budget `{budget.name}`",
      "\n".join([
          f"- **Budget:** {description}. Every number in this section is at this budget.",
          f"- **Seeds:** {', '.join(map(str, seeds))}.",
          f"- **Hardware:** {_hardware(results)}.",
          f"- **Runs complete:** {len(done)} of {len(results)}"
          + (f"; not run yet: {', '.join(missing)}." if missing else "."),
          "- **Command** (resumable; re-running it skips complete runs and re-renders this "
          "file):"]),
      f"```bash\n{command}\n```",
  ]
  if done:
    tables, reading = _TABLES[experiment.key](results, budget)
    parts += tables
    for suffix, plot, kwargs in _PLOTS[experiment.key]:
      label = textwrap.fill(f"{budget.name}: {description}", 110)
      path = plot(results, out_dir / f"{budget.name}_{suffix}.png", label, **kwargs)
      parts.append(f"![{suffix}]({path.name})")
    if reading:
      parts.append(f"What the numbers say (computed from the table):\n\n{reading}")
  else:
    parts.append("No run of this experiment is complete at this budget, so there is no table.")
  commands = "\n".join(equivalent_command(r.spec.config, r.workdir, data_dir) for r in results)
  parts.append(f"<details><summary>Each run as a single command</summary>\n\n```bash\n"
               f"{commands}\n```\n</details>")
  return "\n\n".join(parts)


def render_report(experiment: Experiment, budget: Budget, results: Sequence[RunResult],
                  results_dir: str | pathlib.Path, *, command: str,
                  data_dir: str | None = None) -> pathlib.Path:
  """Writes ``<results_dir>/<slug>/results.md`` (this budget's section) and its plots.

  Args:
    experiment: the experiment.
    budget: the budget whose section is (re)written; other budgets' sections stay.
    results: every run of the experiment under ``budget``, complete or not.
    results_dir: root of the results (``experiments/results``).
    command: the sweep command, printed in the report.
    data_dir: the data directory, for the per-run commands.

  Returns:
    The path of ``results.md``.
  """
  out_dir = pathlib.Path(results_dir) / experiment.slug
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / RESULTS
  section = _section(experiment, budget, results, out_dir, command, data_dir)
  sections = {}
  if path.exists():
    for name, body in re.findall(r"<!-- budget:(\S+) -->\n(.*?)\n<!-- /budget:\1 -->",
                                 path.read_text(), flags=re.S):
      sections[name] = body
  sections[budget.name] = section
  notes = out_dir / "notes.md"
  header = [f"# {experiment.title}", _CLAIMS[experiment.key],
            "Written by `python -m experiments.claims`; one section per compute budget, never "
            "mixed in one table."]
  if notes.exists():
    header.append(notes.read_text().strip())
  body = "\n\n".join(f"<!-- budget:{name} -->\n{text}\n<!-- /budget:{name} -->"
                     for name, text in sorted(sections.items()))
  path.write_text("\n\n".join(header) + "\n\n" + body + "\n")
  return path
